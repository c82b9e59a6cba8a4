"""The demo: ``spheroid run`` on a generated example plate, with the whole read-out.

The example is a small synthetic plate (:class:`~pipeline.config.demo.DemoConfig`): control
wells and one drug that arrests cells in G1 with a known EC50, at six doses in replicate
wells, exported as microscope TIFFs with the ground truth. The demo writes the experiment
file for it (``experiment.yaml``: the plate layout, channel roles, every stage's settings)
and runs it like any experiment: convert -> preprocess -> segment -> evaluate (against the
generator's truth) -> cellcycle -> track -> report. Running it again resumes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.demo import DemoConfig
from pipeline.errors import StoreError

LOG = logging.getLogger(__name__)


def make_example(config: DemoConfig, folder: Path, *, progress: bool = True, overwrite: bool = False) -> Path:
    """Write the synthetic export (``raw/``, ``truth/``, ``synth.yaml``) into ``folder`` unless it is there.

    With ``overwrite``, an example made with other settings is replaced.

    Raises
    ------
    StoreError
        When ``folder`` holds an example made with other settings (and not ``overwrite``).
    """
    from pipeline.config.base import load_config
    from pipeline.config.synth import SynthConfig
    from pipeline.synth import generate, write_export

    marker = folder / "synth.yaml"
    if marker.exists():
        same = load_config(SynthConfig, marker) == config.synth
        if same:
            LOG.info("example data already in %s", folder)
            return folder / "raw"
        if not overwrite:
            raise StoreError(f"{folder}: holds an example made with other synth settings; pass --overwrite, choose another --out or delete it")
        LOG.info("replacing the example in %s (other synth settings)", folder)
        marker.unlink()
        for sub in ("raw", "truth"):
            shutil.rmtree(folder / sub, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for well in config.synth.wells:
        write_export(generate(config.synth, well=well, progress=progress), folder, layout="files", write_config=False)
    result_config = config.synth
    marker.write_text("# model: pipeline.config.synth:SynthConfig\n" + yaml.safe_dump(result_config.model_dump(mode="json"), sort_keys=False))
    return folder / "raw"


def plate_layout(config: DemoConfig) -> dict[str, dict[str, Any]]:
    """The example's layout as an experiment file gives it: controls and the drug's doses, replicates numbered."""
    drug = config.synth.drug
    layout: dict[str, dict[str, Any]] = {}
    replicate: dict[float, int] = {}
    for well in config.synth.wells:
        dose = drug.dose(well) if drug is not None else 0.0
        replicate[dose] = replicate.get(dose, 0) + 1
        if dose > 0:
            layout[well] = {"drug": drug.name, "dose": dose, "unit": drug.unit, "replicate": replicate[dose]}
        else:
            layout[well] = {"control": True, "condition": "control", "replicate": replicate[dose]}
    return layout


def experiment_document(config: DemoConfig) -> dict[str, Any]:
    """The experiment file of the demo (paths relative to the demo folder)."""
    sections = {name: getattr(config, name).model_dump(mode="json", exclude={"cluster"}) for name in ("convert", "preprocess", "segment", "evaluate", "cellcycle", "track")}
    if not isinstance(sections["segment"]["channel"], list):
        sections["segment"].pop("channel")  # the nuclear role sets it
    sections["cellcycle"].pop("channels", None)
    return {
        "name": "spheroid demo plate",
        "store": "plate.zarr",
        "raw": {"inputs": ["example/raw"], "pattern": "{well}_T{t}_{channel}.tif"},
        "plate": plate_layout(config),
        "channels": {"nuclear": "Hoechst", "red": "Cy3", "green": "GFP", "dead": None},
        "ground_truth": {"folder": "example/truth", "pattern": "{well}_labels.tif", "labels": "truth", "wells": config.evaluate_wells},
        **sections,
        "report": config.report.model_dump(mode="json"),
        "cluster": config.cluster.model_dump(mode="json"),
    }


def run_demo(out: Path, config: DemoConfig, *, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Run the demo into folder ``out``; returns the summary also written to ``out/demo.json``.

    Parameters
    ----------
    out : Path
        Working folder: ``example/`` (TIFF export + truth), ``experiment.yaml``,
        ``plate.zarr`` (with ``report/index.html`` and ``evaluation/``), ``demo.json``.
    config : DemoConfig
        The example plate and every stage's settings.
    progress : bool
        Show progress bars.
    overwrite : bool
        Recompute every stage (and the example, where made with other settings) instead of
        resuming: for a folder written by another version or other settings.
    """
    from pipeline.config.experiment import load_experiment
    from pipeline.experiment.run import run_experiment

    out = Path(out)
    start = time.perf_counter()
    make_example(config, out / "example", progress=progress, overwrite=overwrite)
    synth_seconds = time.perf_counter() - start
    experiment = out / "experiment.yaml"
    experiment.write_text("# model: pipeline.config.experiment:ExperimentConfig\n# written by `spheroid demo`; run it again with `spheroid run experiment.yaml`\n"
                          + yaml.safe_dump(experiment_document(config), sort_keys=False))
    result = run_experiment(load_experiment(experiment), source=str(experiment), progress=progress, overwrite=overwrite)
    summary = demo_summary(result, config, out)
    summary["seconds"] = {"synth": round(synth_seconds, 2), **{k: round(v, 2) for k, v in result.seconds.items()}, "total": round(time.perf_counter() - start, 2)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def demo_summary(result, config: DemoConfig, out: Path) -> dict[str, Any]:
    """The figures the demo prints: wells, evaluation, each fit's EC50 against the generator's."""
    import pandas as pd

    from pipeline.experiment.plan import open_store, run_record

    plate = open_store(result.plan.config)
    record = run_record(plate).get("stages", {})
    fits_path = Path(result.report).parent / "doseresponse.parquet" if result.report else None
    fits = pd.read_parquet(fits_path) if fits_path is not None and fits_path.exists() else pd.DataFrame()
    drug = config.synth.drug
    rows = []
    for row in fits.to_dict("records"):
        entry = {k: row[k] for k in ("drug", "readout", "unit", "status", "ec50", "ec50_low", "ec50_high", "hill")}
        if drug is not None and row["status"] == "ok":
            entry["true_ec50"] = drug.ec50
            entry["fold_error"] = float(max(row["ec50"] / drug.ec50, drug.ec50 / row["ec50"]))
            entry["true_in_interval"] = bool(row["ec50_low"] <= drug.ec50 <= row["ec50_high"])
        rows.append(entry)
    return {
        "store": result.store,
        "report": result.report,
        "experiment": str(out / "experiment.yaml"),
        "wells": len(result.plan.wells),
        "fields": len(result.plan.fields),
        "timepoints": result.plan.fields[0].shape[0],
        "evaluation": record.get("evaluate", {}).get("summary"),
        "fits": rows,
        "ran": result.ran,
        "skipped": result.skipped,
    }
