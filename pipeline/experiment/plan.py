"""What ``spheroid run`` will do: the inputs checked against the layout, each stage's state.

:func:`plan_experiment` reads only file headers and store metadata, so it is what
``--dry-run`` prints and what every run checks first: a layout well without raw files, a
ground-truth folder without files, or inputs that do not convert are one-line errors before
any work starts.

Stage state (:func:`stage_states`):

* ``convert``, ``preprocess``, ``segment``: from the store itself (volumes marked done,
  images marked complete, the settings signature of each output);
* ``evaluate``, ``cellcycle``, ``track``, ``report``: from the run record in the store
  (``attrs["spheroid"]["run"]``): a stage is done when it finished with the same settings
  signature, which chains the signatures of the stages before it, so a stage whose input
  changed runs again.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.experiment import STAGES, ExperimentConfig
from pipeline.errors import ConfigError, InputError, SpheroidError, StoreError
from pipeline.experiment import costs
from pipeline.provenance import settings_signature

LOG = logging.getLogger(__name__)

RUN_KEY = "run"
"""Key of the run record under the plate's ``attrs["spheroid"]``."""


@dataclass
class FieldInfo:
    """One field the experiment's inputs give."""

    well: str
    index: int
    shape: tuple[int, int, int, int, int]
    dtype: str
    channels: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.well}/{self.index}"


@dataclass
class StageState:
    """How far one stage is."""

    stage: str
    volumes: int
    """Volumes (or time points) the stage handles in all."""
    left: int
    """Those still to do."""
    done: bool
    signature: str
    note: str = ""
    seconds: float = 0.0
    """Estimated wall time of what is left."""
    nbytes: float = 0.0
    """Estimated storage of what is left."""


@dataclass
class ExperimentPlan:
    """The inputs, the stages and the estimate of what is left."""

    config: ExperimentConfig
    source: str
    fields: list[FieldInfo]
    stamp: str
    stages: list[str]
    states: dict[str, StageState] = field(default_factory=dict)
    store_exists: bool = False
    truth_files: dict[str, str] = field(default_factory=dict)
    cost_source: str = ""

    @property
    def wells(self) -> list[str]:
        return list(dict.fromkeys(f.well for f in self.fields))

    @property
    def seconds_left(self) -> float:
        return float(sum(s.seconds for s in self.states.values() if s.stage in self.stages and not s.done))

    @property
    def bytes_left(self) -> float:
        return float(sum(s.nbytes for s in self.states.values() if s.stage in self.stages and not s.done))


def expand_inputs(config: ExperimentConfig, source: str) -> list[Path]:
    """The raw inputs, glob patterns expanded.

    Raises
    ------
    ConfigError
        A pattern that matches nothing, or a path that does not exist.
    """
    out: list[Path] = []
    for i, item in enumerate(config.raw.inputs):
        if any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                raise ConfigError(f"{source}: key 'raw.inputs.{i}': {item!r} matches no file")
            out.extend(Path(m) for m in matches)
        elif not Path(item).exists():
            raise ConfigError(f"{source}: key 'raw.inputs.{i}': {item}: no such file or folder")
        else:
            out.append(Path(item))
    return out


def truth_files(config: ExperimentConfig, wells: list[str], source: str) -> dict[str, str]:
    """Well -> its ground-truth label file (wells without one are left out).

    Raises
    ------
    ConfigError
        The folder does not exist or holds a file for none of the wells.
    """
    gt = config.ground_truth
    if gt is None:
        return {}
    folder = Path(gt.folder)
    if not folder.is_dir():
        raise ConfigError(f"{source}: key 'ground_truth.folder': {folder}: no such folder")
    if gt.wells is not None:
        from pipeline.config.experiment import well_name

        chosen = {well_name(w) for w in gt.wells}
        unknown = sorted(chosen - set(wells))
        if unknown:
            raise ConfigError(f"{source}: key 'ground_truth.wells': no raw files for well(s) {', '.join(unknown)}")
        wells = [w for w in wells if w in chosen]
    found = {w: str(folder / gt.pattern.format(well=w)) for w in wells if (folder / gt.pattern.format(well=w)).is_file()}
    if not found:
        raise ConfigError(f"{source}: key 'ground_truth.pattern': no file {gt.pattern!r} in {folder} for any well ({', '.join(wells[:4])} ...)")
    return found


def stage_list(config: ExperimentConfig, start: str | None, stop: str | None) -> list[str]:
    """The stages to run, in order, between ``start`` and ``stop`` (both included)."""
    stages = [s for s in STAGES if s != "evaluate" or config.ground_truth is not None]
    for name, value in (("--from", start), ("--until", stop)):
        if value is not None and value not in stages:
            extra = " (evaluate needs ground_truth in the experiment)" if value == "evaluate" else ""
            raise ConfigError(f"{name} {value}: not a stage of this experiment; stages: {', '.join(stages)}{extra}")
    i = stages.index(start) if start else 0
    j = stages.index(stop) if stop else len(stages) - 1
    if i > j:
        raise ConfigError(f"--from {start} comes after --until {stop}")
    return stages[i : j + 1]


def plan_experiment(config: ExperimentConfig, *, source: str = "<experiment>", start: str | None = None, stop: str | None = None) -> ExperimentPlan:
    """Check the inputs against the layout and find each stage's state in the store.

    Raises
    ------
    ConfigError, InputError
        One line naming the key or file and the problem, before any work.
    """
    from pipeline.convert.plan import fingerprint, plan_inputs

    stages = stage_list(config, start, stop)
    convert_cfg = config.stage_config("convert")
    try:
        plans = plan_inputs(expand_inputs(config, source), convert_cfg)
    except InputError as exc:
        raise InputError(f"{source}: raw inputs: {exc}") from None
    fields = [FieldInfo(p.well, p.index, tuple(p.shape), str(p.dtype), tuple(p.meta.channels)) for p in plans]
    have = {f.well for f in fields}
    for well in config.plate:
        if well not in have:
            raise ConfigError(f"{source}: key 'plate.{well}': no raw files for well {well} (the inputs hold {', '.join(sorted(have)[:8])}{' ...' if len(have) > 8 else ''})")
    unlisted = sorted(have - set(config.plate))
    if config.plate and unlisted:
        LOG.warning("wells %s have raw files but no entry in 'plate': each is reported as its own condition", ", ".join(unlisted))
    channels = fields[0].channels
    for role, name in config.channels.model_dump().items():
        if name is not None and name not in channels:
            raise ConfigError(f"{source}: key 'channels.{role}': no channel {name!r} in the inputs (channels: {', '.join(channels)})")
    if isinstance(config.segment.channel, list):  # channels combined for segmentation
        for name in config.segment.channel:
            if name not in channels if isinstance(name, str) else not 0 <= name < len(channels):
                raise ConfigError(f"{source}: key 'segment.channel': no channel {name!r} in the inputs (channels: {', '.join(channels)})")
    plan = ExperimentPlan(config, source, fields, fingerprint(plans, convert_cfg), stages)
    plan.truth_files = truth_files(config, plan.wells, source)
    plan.states = stage_states(plan)
    return plan


# -- stage states --------------------------------------------------------------------------

def open_store(config: ExperimentConfig):
    """The plate store, or ``None`` when there is none yet."""
    from pipeline.io.location import Location
    from pipeline.io.plate import Plate

    location = Location(config.store, config.storage_options)
    if not location.exists():
        return None
    try:
        return Plate.open(config.store, mode="r", storage_options=config.storage_options)
    except StoreError:
        return None


def run_record(plate) -> dict[str, Any]:
    """The run record of a store (empty without one)."""
    if plate is None:
        return {}
    return dict(plate.group.attrs.get("spheroid", {}).get(RUN_KEY, {}))


def stage_signatures(plan: ExperimentPlan) -> dict[str, str]:
    """Each stage's settings signature, chained: a stage's includes the one before it."""
    config = plan.config
    out: dict[str, str] = {}
    upstream = {"convert": None, "preprocess": "convert", "segment": "convert", "evaluate": "segment", "cellcycle": "segment", "track": "cellcycle", "report": "track"}
    for stage in STAGES:
        settings = config.stage_config(stage).model_dump(mode="json", exclude={"cluster"})
        parts: dict[str, Any] = {"settings": settings, "upstream": out.get(upstream[stage])}
        if stage == "convert":
            parts["inputs"] = plan.stamp
        if stage == "segment":
            parts["model"] = segment_identity(config)
        if stage == "evaluate":
            parts["truth"] = plan.truth_files
        if stage == "report":
            parts.update(layout={w: v.model_dump(mode="json") for w, v in config.plate.items()}, name=config.name, evaluate=out.get("evaluate") if config.ground_truth else None)
        out[stage] = settings_signature(parts)
    return out


def segment_identity(config: ExperimentConfig) -> dict[str, Any]:
    """What identifies the segmentation: the backend's settings with the model's hashes."""
    from pipeline.segment.backends import get_segmenter
    from pipeline.segment.runner import segment_settings

    cfg = config.stage_config("segment")
    return segment_settings(cfg, get_segmenter(cfg))


def stage_states(plan: ExperimentPlan) -> dict[str, StageState]:
    """Every stage's state in the store, and the estimate of what is left."""
    config = plan.config
    plate = open_store(config)
    plan.store_exists = plate is not None
    record = run_record(plate).get("stages", {})
    signatures = stage_signatures(plan)
    measured = costs.measured(run_record(plate))
    plan.cost_source = costs.source_note(measured)
    n_workers = costs.workers(config.cluster)
    states: dict[str, StageState] = {}
    for stage in STAGES:
        if stage == "evaluate" and config.ground_truth is None:
            continue
        total = _volumes(plan, stage)
        try:
            left, note = _left(plan, stage, plate, record, signatures[stage], total)
        except SpheroidError as exc:
            left, note = total, str(exc)
        state = StageState(stage, total, left, left == 0 and not note, signatures[stage], note)
        voxels = _voxels(plan, stage)
        state.seconds, state.nbytes = costs.estimate(stage, state.left, voxels, n_workers, measured)
        states[stage] = state
    return states


def _volumes(plan: ExperimentPlan, stage: str) -> int:
    if stage in ("convert", "preprocess"):
        return sum(f.shape[0] * f.shape[1] for f in plan.fields)
    if stage == "evaluate":
        return sum(f.shape[0] for f in plan.fields if f.index == 0 and f.well in plan.truth_files)
    return sum(f.shape[0] for f in plan.fields)


def _voxels(plan: ExperimentPlan, stage: str) -> float:
    """Voxels of one of the stage's volumes (the largest field's)."""
    return float(max(int(np.prod(f.shape[2:])) for f in plan.fields))


def _left(plan: ExperimentPlan, stage: str, plate, record: dict, signature: str, total: int) -> tuple[int, str]:
    """Volumes left and a note (why the stage cannot be skipped although nothing is left)."""
    config = plan.config
    if plate is None:
        return total, ""
    if stage == "convert":
        stamp = plate.group.attrs.get("spheroid", {}).get("convert", {}).get("fingerprint")
        if stamp != plan.stamp:
            return total, "the store holds other inputs or settings (needs --overwrite)"
        left = 0
        for f in plate.fields():
            left += int((~f.done("raw")).sum()) if f.has_image("raw") else 0
        return left, ""
    if stage == "preprocess":
        from pipeline.preprocess.runner import plan as plan_preprocess

        cfg = config.stage_config("preprocess")
        if not all(f.has_image("raw") and f.is_complete("raw") for f in plate.fields()):
            return total, ""
        plans = plan_preprocess(plate, cfg)
        left = sum(len(p.tasks) for p in plans)
        complete = all(p.field.is_complete(cfg.output) for p in plans)
        return left, "" if complete or left else "not marked complete"
    if stage == "segment":
        from pipeline.provenance import settings_signature as sig

        cfg = config.stage_config("segment")
        wanted = sig(segment_identity(config))
        left, note = 0, ""
        for f in plate.fields():
            if not f.has_labels(cfg.output):
                left += f.image("raw").shape[0] if f.has_image("raw") else 0
                continue
            if f.attrs(cfg.output, label=True).get("signature") != wanted:
                return total, "labels were made with other settings (needs --overwrite)"
            left += int((~f.done(cfg.output, label=True)).sum())
            if not f.is_complete(cfg.output, label=True) and not note:
                note = "" if left else "not marked complete"
        return left, note
    done = record.get(stage, {}).get("signature") == signature
    if done and stage == "report" and not _report_exists(plate, config):
        done = False
    return (0, "") if done else (total, "")


def _report_exists(plate, config: ExperimentConfig) -> bool:
    from pipeline.report.run import report_folder

    import fsspec

    folder = report_folder(plate, config.report)
    fs, root = fsspec.core.url_to_fs(folder, **(config.storage_options if "://" in folder else {}))
    return fs.exists(f"{root}/index.html")


def format_plan(plan: ExperimentPlan) -> str:
    """The plan as text (what ``--dry-run`` prints)."""
    config = plan.config
    f0 = plan.fields[0]
    lines = [
        f"experiment {config.name!r} -> {config.store} ({'exists' if plan.store_exists else 'new store'})",
        f"wells: {len(plan.wells)} ({len(plan.fields)} field(s)); {f0.shape[0]} time point(s), channels {', '.join(f0.channels)}, "
        f"{f0.shape[2]} x {f0.shape[3]} x {f0.shape[4]} voxels ({f0.dtype})",
    ]
    rows = config.conditions(plan.wells)
    by_condition: dict[str, list[str]] = {}
    for well, row in rows.items():
        by_condition.setdefault(row["condition"], []).append(well)
    for name, wells in by_condition.items():
        lines.append(f"  {name}: {', '.join(wells)}")
    lines.append(f"{'stage':<11}{'state':<28}{'volumes left':>14}{'time':>10}{'storage':>11}")
    for stage, state in plan.states.items():
        if stage not in plan.stages:
            status = "done" if state.done else "not run (outside --from/--until)"
        else:
            status = "done: skipped" if state.done else (state.note or "to do")
        lines.append(f"{stage:<11}{status[:27]:<28}{state.left:>8}/{state.volumes:<5}{costs.format_seconds(state.seconds if not state.done else 0):>10}{costs.format_bytes(state.nbytes if not state.done else 0):>11}")
        if len(status) > 27:
            lines.append(f"{'':<11}({status})")
    lines.append(f"left: about {costs.format_seconds(plan.seconds_left)} on {costs.workers(config.cluster)} worker(s), "
                 f"{costs.format_bytes(plan.bytes_left)} more in the store (estimated from {plan.cost_source})")
    return "\n".join(lines)
