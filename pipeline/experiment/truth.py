"""Ground truth of an experiment: label TIFFs copied into the store, then scored.

Each well's label file (TZYX, or ZYX for a single time point) becomes ``labels/<name>`` of
the well's field 0, beside the predicted labels, and :mod:`pipeline.evaluate` pairs the two
by field and time point.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import write_volume

LOG = logging.getLogger(__name__)


def add_truth(plate: Plate, files: dict[str, str], name: str = "truth", *, overwrite: bool = False) -> int:
    """Copy each well's label TIFF into field 0 of the well as ``labels/<name>``.

    A field whose truth is complete and came from the same file is left alone.

    Returns
    -------
    int
        Fields written.

    Raises
    ------
    InputError
        A file that is not a label image of the field's shape.
    """
    import tifffile

    written = 0
    for well, path in files.items():
        field = plate.field(well, 0)
        if not overwrite and field.has_labels(name) and field.is_complete(name, label=True) and field.attrs(name, label=True).get("source") == str(path):
            continue
        try:
            labels = tifffile.imread(path)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise InputError(f"{path}: cannot read label TIFF ({exc})") from None
        shape = field.image().shape
        if labels.ndim == 3 and shape[0] == 1:
            labels = labels[None]
        if labels.shape != (shape[0], *shape[2:]):
            raise InputError(f"{path}: labels have shape {labels.shape}; field {field} needs (t, z, y, x) = {(shape[0], *shape[2:])}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{path}: labels must be integers, got {labels.dtype}")
        meta = field.meta()
        field.create_labels(
            name,
            (shape[0], 1, *shape[2:]),
            ImageMeta(channels=(name,), voxel_size=meta.voxel_size, time_step=meta.time_step),
            chunk_yx=tuple(field.image().chunks[3:]),
            attrs={"source": str(path)},
            overwrite=True,
        )
        for t in range(labels.shape[0]):
            write_volume(plate.location, f"{field.label_path(name)}/0", t, 0, labels[t].astype(np.uint32))
        field.mark_complete(name, label=True)
        written += 1
    return written


def evaluate_store(plate: Plate, files: dict[str, str], config, out: Path, *, truth_labels: str, pred_labels: str, client=None, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Copy the truth in, score the predicted labels against it, write tables and figures to ``out``.

    Returns
    -------
    dict
        The pooled scores at ``config.report_threshold`` and the evaluation summary.
    """
    from pipeline.evaluate.raw import attach_raw
    from pipeline.evaluate.run import evaluate_to, overlay_index
    from pipeline.evaluate.sources import pair_sources
    from pipeline.provenance import provenance

    add_truth(plate, files, truth_labels, overwrite=overwrite)
    config = config.model_copy(update={"truth_labels": truth_labels, "pred_labels": pred_labels})
    items = pair_sources(plate.location.url, plate.location.url, truth_labels=truth_labels, pred_labels=pred_labels, storage_options=plate.location.storage_options or None)
    shown = overlay_index(items, config)
    if shown is not None:  # the overlay's outlines on the raw image of the segmented channel
        items = attach_raw(items, [shown], None, channel=config.plots.image_channel)
    evaluation = evaluate_to(items, config, out, client=client, progress=progress, provenance=provenance("evaluate", config))
    rep = evaluation.pooled[config.report_threshold]
    return {
        "volumes": len(items),
        "true_nuclei": int(rep.n_true),
        "predicted_nuclei": int(rep.n_pred),
        "threshold": config.report_threshold,
        "precision": float(rep.precision),
        "recall": float(rep.recall),
        "f1": float(rep.f1),
        "evaluation_score": float(evaluation.summary["evaluation_score"]),
        "folder": str(out),
    }
