"""The demo: generate an example experiment and run the pipeline on it end to end.

Steps, all on one Dask cluster: synthetic FUCCI spheroids exported as microscope TIFFs ->
``convert`` into an OME-Zarr plate -> ``preprocess`` -> ``segment`` (the shipped U-Net) ->
the generator's ground truth is added to the store as ``labels/truth`` -> ``evaluate``.
Each stage resumes, so running the demo again finishes an interrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.demo import DemoConfig
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import write_volume

LOG = logging.getLogger(__name__)

TRUTH = "truth"


def make_example(config: DemoConfig, folder: Path, *, progress: bool = True) -> Path:
    """Write the synthetic export (``raw/``, ``truth/``) into ``folder`` unless it is there."""
    from pipeline.config.base import save_config
    from pipeline.synth import generate, write_export

    marker = folder / "synth.yaml"
    if marker.exists():
        LOG.info("example data already in %s", folder)
        return folder / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for well in config.synth.wells:
        write_export(generate(config.synth, well=well, progress=progress), folder, layout="files")
    save_config(config.synth, marker)
    return folder / "raw"


def add_truth(plate: Plate, truth_dir: Path) -> None:
    """Copy the generator's instance labels into each field as ``labels/truth``."""
    import tifffile

    for field in plate.fields():
        if field.is_complete(TRUTH, label=True):
            continue
        labels = tifffile.imread(truth_dir / f"{field.well}_labels.tif")
        meta = field.meta()
        field.create_labels(
            TRUTH,
            (labels.shape[0], 1, *labels.shape[1:]),
            ImageMeta(channels=(TRUTH,), voxel_size=meta.voxel_size, time_step=meta.time_step),
            chunk_yx=tuple(field.image().chunks[3:]),
            attrs={"source": str(truth_dir / f"{field.well}_labels.tif")},
        )
        for t in range(labels.shape[0]):
            write_volume(plate.location, f"{field.label_path(TRUTH)}/0", t, 0, labels[t].astype(np.uint32))
        field.mark_complete(TRUTH, label=True)


def run_demo(out: Path, config: DemoConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the demo into folder ``out``; returns the summary also written to ``out/demo.json``.

    Parameters
    ----------
    out : Path
        Working folder: ``example/`` (TIFF export + truth), ``plate.zarr``, ``evaluation/``.
    config : DemoConfig
        Settings of every stage.
    progress : bool
        Show progress bars.
    """
    from pipeline.cluster import open_client
    from pipeline.convert.run import convert
    from pipeline.evaluate.raw import attach_raw
    from pipeline.evaluate.run import evaluate_to, overlay_index
    from pipeline.evaluate.sources import pair_sources
    from pipeline.preprocess.runner import run_preprocess
    from pipeline.provenance import provenance
    from pipeline.segment.runner import run_segment

    out = Path(out)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    raw = make_example(config, out / "example", progress=progress)
    timings["synth"] = time.perf_counter() - start
    store = str(out / "plate.zarr")
    with open_client(config.cluster) as client:
        for name, step in (
            ("convert", lambda: convert([raw], store, config.convert, progress=progress, client=client)),
            ("preprocess", lambda: run_preprocess(Plate.open(store, mode="r+"), config.preprocess, progress=progress, client=client)),
            ("segment", lambda: run_segment(Plate.open(store, mode="r+"), config.segment, progress=progress, client=client)),
        ):
            LOG.info("demo: %s", name)
            t0 = time.perf_counter()
            step()
            timings[name] = time.perf_counter() - t0
        plate = Plate.open(store, mode="r+")
        add_truth(plate, out / "example" / "truth")
        t0 = time.perf_counter()
        evaluate = config.evaluate.model_copy(update={"truth_labels": TRUTH, "pred_labels": config.segment.output})
        items = pair_sources(store, store, truth_labels=TRUTH, pred_labels=config.segment.output)
        shown = overlay_index(items, evaluate)
        if shown is not None:  # the overlay's outlines on the raw image of the segmented channel
            items = attach_raw(items, [shown], None, channel=evaluate.plots.image_channel)
        evaluation = evaluate_to(items, evaluate, out / "evaluation", client=client, progress=progress, provenance=provenance("evaluate", evaluate))
        timings["evaluate"] = time.perf_counter() - t0
    rep = evaluation.pooled[evaluate.report_threshold]
    summary = {
        "store": store,
        "fields": [str(f) for f in plate.fields()],
        "volumes": len(items),
        "true_nuclei": rep.n_true,
        "predicted_nuclei": rep.n_pred,
        "report_threshold": evaluate.report_threshold,
        "precision": rep.precision,
        "recall": rep.recall,
        "f1": rep.f1,
        "evaluation_score": evaluation.summary["evaluation_score"],
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary
