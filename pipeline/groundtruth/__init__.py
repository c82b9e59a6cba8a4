"""Ground truth: instance masks -> semantic targets with an edge class, training sets,
and the human-in-the-loop export/import of corrections.

Modules: :mod:`~pipeline.groundtruth.prepare` (the vectorised target preparation),
:mod:`~pipeline.groundtruth.trainset` (the training-set folder format),
:mod:`~pipeline.groundtruth.corrections` (Labkit / napari round trips),
:mod:`~pipeline.groundtruth.builders` (training sets from synthetic and real data),
:mod:`~pipeline.groundtruth.tiffio` (calibrated, atomic TIFF files).
"""

from pipeline.groundtruth.prepare import as_instances, prepare_target
from pipeline.groundtruth.trainset import TrainingSet, class_balance

__all__ = ["TrainingSet", "as_instances", "class_balance", "prepare_target"]
