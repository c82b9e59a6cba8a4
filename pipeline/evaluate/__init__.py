"""Evaluation: instance matching, the thesis' Evaluation Score, pixel metrics, plots.

Pure metrics over numpy arrays (the training stage uses them for validation);
:mod:`pipeline.evaluate.run` evaluates many volumes on the Dask cluster.
"""

from pipeline.evaluate.matching import DEFAULT_THRESHOLDS, Matching, match_overlap, match_thresholds, matching, matching_dataset, pool
from pipeline.evaluate.overlap import Overlap, label_overlap

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Matching",
    "Overlap",
    "label_overlap",
    "match_overlap",
    "match_thresholds",
    "matching",
    "matching_dataset",
    "pool",
]
