"""``spheroid run``: every stage of an experiment, on one Dask cluster, resuming where it stopped.

The stages are the pipeline's own functions (:func:`pipeline.convert.run.convert`,
:func:`~pipeline.preprocess.runner.run_preprocess`, :func:`~pipeline.segment.runner.run_segment`,
:func:`~pipeline.cellcycle.runner.run_cellcycle`, :func:`~pipeline.cellcycle.runner.run_track`,
:func:`~pipeline.report.run.write_report`, and the evaluation when ground truth is given) with
the configs the experiment file resolves (:meth:`ExperimentConfig.stage_config`). The client
is opened once, when the first distributed stage needs it, and shared.

A stage that is done (:mod:`pipeline.experiment.plan`) is skipped, unless a stage it depends
on ran in this invocation, ``--from`` names it or one before it, or ``--overwrite`` is given.
Each stage that finishes is written to the store's run record with its settings signature
and what it cost (the next ``--dry-run`` estimates from it). Every output made during the
run records the experiment file and the segmentation model (:func:`provenance_context`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.experiment import STAGES, ExperimentConfig
from pipeline.errors import ConfigError
from pipeline.experiment import costs
from pipeline.experiment.plan import RUN_KEY, ExperimentPlan, plan_experiment, segment_identity
from pipeline.provenance import provenance_context

LOG = logging.getLogger(__name__)

DISTRIBUTED = ("convert", "preprocess", "segment", "evaluate", "cellcycle")
"""Stages that run on the Dask cluster (track and report run in this process)."""


@dataclass
class RunResult:
    """What a run did (small: names, numbers and paths)."""

    store: str
    plan: ExperimentPlan
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: str | None = None
    """URL of the report's ``index.html`` (when the report stage ran or was already done)."""
    dry_run: bool = False

    @property
    def fits(self):
        """The dose-response table of the report (``None`` when the report did not run now)."""
        return self.summaries.get("report", {}).get("fits")


def dependencies(config: ExperimentConfig) -> dict[str, set[str]]:
    """Which stages each stage reads the output of."""
    deps = {"convert": set(), "preprocess": {"convert"}, "segment": {"convert"}, "evaluate": {"segment"},
            "cellcycle": {"segment"}, "track": {"cellcycle"}, "report": {"track", "cellcycle"}}
    if config.segment.input != "raw":
        deps["segment"].add("preprocess")
    if config.cellcycle.input != "raw":
        deps["cellcycle"].add("preprocess")
    if config.ground_truth is not None:
        deps["report"].add("evaluate")
    return deps


def experiment_facts(config: ExperimentConfig, source: str) -> dict[str, Any]:
    """The experiment file as outputs record it: path, SHA-256 of its bytes, name."""
    facts: dict[str, Any] = {"name": config.name, "file": source}
    path = Path(source)
    if path.is_file():
        facts["file"] = str(path.resolve())
        facts["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        from pipeline.io.location import redacted

        facts["config"] = config.model_dump(mode="json")  # no file to point at: the settings themselves,
        facts["config"]["storage_options"] = redacted(facts["config"]["storage_options"])  # without credentials
    return facts


def run_experiment(
    config: ExperimentConfig,
    *,
    source: str = "<experiment>",
    start: str | None = None,
    stop: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    client=None,
) -> RunResult:
    """Run the experiment's stages (or, with ``dry_run``, only plan them).

    Parameters
    ----------
    config : ExperimentConfig
        The experiment (paths already resolved: :func:`pipeline.config.experiment.load_experiment`).
    source : str
        The experiment file (recorded with every output, named in errors).
    start, stop : str, optional
        First and last stage to run (``--from`` / ``--until``).
    overwrite : bool
        Recompute the selected stages instead of resuming them.
    dry_run : bool
        Check everything and estimate, run nothing.
    progress : bool
        Progress bars.
    client : distributed.Client, optional
        Use this client instead of opening ``config.cluster``.

    Raises
    ------
    ConfigError, InputError, StoreError
        Before any work: bad layout, inputs, settings; with ``--from``, a stage before it
        that is not done.
    """
    plan = plan_experiment(config, source=source, start=start, stop=stop)
    result = RunResult(store=config.store, plan=plan, dry_run=dry_run)
    if config.ground_truth is not None and "://" in config.store:
        raise ConfigError(f"{source}: key 'ground_truth': the evaluation writes local files; use a local store")
    if dry_run:
        return result
    before = [s for s in STAGES if s in plan.states and STAGES.index(s) < STAGES.index(plan.stages[0])]
    for stage in before:
        if not plan.states[stage].done:
            raise ConfigError(f"--from {plan.stages[0]}: stage {stage} is not done ({plan.states[stage].note or f'{plan.states[stage].left} volume(s) left'}); run it first")
    deps = dependencies(config)
    facts = {"experiment": experiment_facts(config, source), "segmentation_model": segment_identity(config)}
    with ExitStack() as stack, provenance_context(**facts):
        shared = [client]

        def get_client():
            if shared[0] is None:
                from pipeline.cluster import open_client
                from pipeline.io.location import Location

                in_process = Location(config.store, config.storage_options).in_memory
                shared[0] = stack.enter_context(open_client(config.cluster, in_process=in_process))
            return shared[0]

        ran: set[str] = set()
        for stage in plan.stages:
            state = plan.states[stage]
            upstream_ran = bool(deps[stage] & ran)
            if state.done and not (overwrite or start is not None or upstream_ran):
                LOG.info("%s: done, skipped", stage)
                result.skipped.append(stage)
                continue
            LOG.info("%s: %s", stage, "running" if not state.left or state.left == state.volumes else f"{state.left} of {state.volumes} volume(s) left")
            t0 = time.perf_counter()
            summary = STAGE_FUNCTIONS[stage](plan, get_client if stage in DISTRIBUTED else None,
                                             overwrite=overwrite or (stage in ("cellcycle", "evaluate") and (upstream_ran or _stale(plan, stage))),
                                             progress=progress)
            seconds = time.perf_counter() - t0
            ran.add(stage)
            result.ran.append(stage)
            result.seconds[stage] = seconds
            result.summaries[stage] = summary
            _record(plan, stage, seconds, summary)
    if "report" in plan.states and (plan.states["report"].done or "report" in result.ran):
        from pipeline.io.plate import Plate
        from pipeline.report.run import report_folder

        plate = Plate.open(config.store, mode="r", storage_options=config.storage_options)
        result.report = f"{report_folder(plate, config.report)}/index.html"
    return result


def _stale(plan: ExperimentPlan, stage: str) -> bool:
    """True when the stage finished before with other settings or inputs (its parts must go)."""
    from pipeline.experiment.plan import open_store, run_record

    old = run_record(open_store(plan.config)).get("stages", {}).get(stage, {}).get("signature")
    return old is not None and old != plan.states[stage].signature


def _record(plan: ExperimentPlan, stage: str, seconds: float, summary: dict[str, Any]) -> None:
    """Write the stage's signature, time and cost into the store's run record."""
    from pipeline.io.plate import Plate

    config = plan.config
    plate = Plate.open(config.store, mode="r+", storage_options=config.storage_options)
    attrs = dict(plate.group.attrs.get("spheroid", {}))
    run = dict(attrs.get(RUN_KEY, {}))
    stages = dict(run.get("stages", {}))
    volumes = int(summary.get("volumes_done", 0))
    mvox = max(int(f.shape[2] * f.shape[3] * f.shape[4]) for f in plan.fields) / 1e6
    parallel = costs.workers(config.cluster) if stage in DISTRIBUTED else 1
    entry = {
        "signature": plan.states[stage].signature,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "volumes": volumes,
        "megavoxels": mvox,
        "worker_seconds": round(seconds * parallel, 3),
    }
    stored = _stored_bytes(plan, stage)
    if stored:
        entry["bytes_per_voxel"] = stored / (plan.states[stage].volumes * mvox * 1e6)
    if stage == "evaluate":
        entry["summary"] = {k: v for k, v in summary.items() if k != "volumes_done"}
    stages[stage] = entry
    run.update({"experiment": experiment_facts(config, plan.source), "stages": stages})
    attrs[RUN_KEY] = run
    plate.group.attrs["spheroid"] = attrs


def _stored_bytes(plan: ExperimentPlan, stage: str) -> float:
    """Bytes the stage's outputs take in the store (all fields), for the storage estimate."""
    from pipeline.io.location import Location
    from pipeline.io.plate import parse_well

    config = plan.config
    fs, root = Location(config.store, config.storage_options).filesystem()
    paths = []
    for f in plan.fields:
        row, col = parse_well(f.well)
        base = f"{root}/{row}/{col}/{f.index}"
        paths += {
            "convert": [f"{base}/0"],
            "preprocess": [f"{base}/{config.preprocess.output}"],
            "segment": [f"{base}/labels/{config.segment.output}"],
            "cellcycle": [f"{base}/tables/{config.cellcycle.table}.parquet", f"{base}/tables/{config.cellcycle.table}.parts"],
            "track": [f"{base}/tables/{config.track.tracks_table}.parquet"],
        }.get(stage, [])
    try:
        return float(sum(fs.du(p) for p in paths if fs.exists(p)))
    except OSError:
        return 0.0


# -- the stages ---------------------------------------------------------------------------

def _plate(plan: ExperimentPlan, mode: str = "r+"):
    from pipeline.io.plate import Plate

    return Plate.open(plan.config.store, mode=mode, storage_options=plan.config.storage_options)


def _convert(plan, client, *, overwrite, progress):
    from pipeline.convert.run import convert
    from pipeline.experiment.plan import expand_inputs

    config = plan.config
    out = convert(expand_inputs(config, plan.source), config.store, config.stage_config("convert"), overwrite=overwrite,
                  storage_options=config.storage_options or None, progress=progress, client=client())
    return {**out, "volumes_done": out["written"]}


def _preprocess(plan, client, *, overwrite, progress):
    from pipeline.preprocess.runner import run_preprocess

    out = run_preprocess(_plate(plan), plan.config.stage_config("preprocess"), overwrite=overwrite, progress=progress, source=plan.source, client=client())
    return {**out, "volumes_done": out["volumes"]}


def _segment(plan, client, *, overwrite, progress):
    from pipeline.segment.runner import run_segment

    out = run_segment(_plate(plan), plan.config.stage_config("segment"), overwrite=overwrite, progress=progress, source=plan.source, client=client())
    return {**out, "volumes_done": out["volumes"]}


def _evaluate(plan, client, *, overwrite, progress):
    from pipeline.experiment.truth import evaluate_store

    config = plan.config
    out = Path(config.store) / "evaluation"
    summary = evaluate_store(_plate(plan), plan.truth_files, config.stage_config("evaluate"), out, truth_labels=config.ground_truth.labels,
                             pred_labels=config.segment.output, client=client(), progress=progress, overwrite=overwrite)
    return {**summary, "volumes_done": summary["volumes"]}


def _cellcycle(plan, client, *, overwrite, progress):
    from pipeline.cellcycle.runner import run_cellcycle

    out = run_cellcycle(_plate(plan), plan.config.stage_config("cellcycle"), overwrite=overwrite, progress=progress, source=plan.source, client=client())
    return {**out, "volumes_done": out["volumes"]}


def _track(plan, client, *, overwrite, progress):
    from pipeline.cellcycle.runner import run_track

    out = run_track(_plate(plan), plan.config.stage_config("track"), overwrite=overwrite, progress=progress)
    return {**out, "volumes_done": sum(f.shape[0] for f in plan.fields)}


def _report(plan, client, *, overwrite, progress):
    from pipeline.experiment.plan import run_record
    from pipeline.report.run import write_report

    config = plan.config
    plate = _plate(plan)
    sections = []
    evaluation = run_record(plate).get("stages", {}).get("evaluate", {}).get("summary")
    if evaluation:
        sections.append(("Segmentation against the ground truth", evaluation_html(evaluation)))
    out = write_report(plate, config.stage_config("report"), layout=config.conditions(sorted({f.well for f in plan.fields})), title=config.name,
                       nuclear_channel=config.channels.nuclear, sections=sections)
    return {"url": out.url, "wells": out.wells, "fits": out.fits, "volumes_done": sum(f.shape[0] for f in plan.fields), "seconds": out.seconds}


def evaluation_html(summary: dict[str, Any]) -> str:
    """A short paragraph of the evaluation's pooled scores."""
    return (
        f"<p>{summary['volumes']} volume(s): {summary['true_nuclei']} true and {summary['predicted_nuclei']} predicted nuclei; at IoU &ge; "
        f"{summary['threshold']}: precision {summary['precision']:.3f}, recall {summary['recall']:.3f}, F1 {summary['f1']:.3f}; "
        f"Evaluation Score {summary['evaluation_score']:.3f}. Tables and figures: <code>{summary['folder']}</code>.</p>"
    )


STAGE_FUNCTIONS = {
    "convert": _convert,
    "preprocess": _preprocess,
    "segment": _segment,
    "evaluate": _evaluate,
    "cellcycle": _cellcycle,
    "track": _track,
    "report": _report,
}
