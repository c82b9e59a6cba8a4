"""The experiment file of ``spheroid run``: raw data, plate layout, channel roles, every stage.

One YAML file describes an experiment (``configs/experiment.yaml`` documents every key)::

    name: drug screen 1
    store: exp1.zarr                     # relative paths are relative to this file
    raw:
      inputs: [raw/]                     # files, folders or glob patterns
      pattern: "{well}_T{t}_{channel}.tif"
    plate:                               # well -> what is in it
      B2: {control: true, condition: DMSO, replicate: 1}
      B3: {drug: palbociclib, dose: 0.1, unit: uM, replicate: 1}
    channels: {nuclear: Hoechst, red: Cy3, green: GFP, dead: null}
    voxel_size: [5.0, 1.24, 1.24]        # only where the files lack it
    time_step_s: 1800
    segment: {...}                       # each stage's own settings (SegmentConfig ...)
    cluster: {kind: local}

The layout is checked as the file is read: a dose without a unit, a drug given at a
single dose, wells of one drug in different units, or drug wells without any control
well are refused with one line naming the key. Wells without raw files are found when
the inputs are planned, before any work (:mod:`pipeline.experiment.plan`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.config.base import StrictModel, format_validation_error, read_yaml
from pipeline.config.cellcycle import CellcycleConfig, ChannelRoles, TrackConfig
from pipeline.config.cluster import ClusterConfig
from pipeline.config.convert import ConvertConfig
from pipeline.config.evaluate import EvaluateConfig
from pipeline.config.preprocess import PreprocessConfig
from pipeline.config.report import ReportConfig
from pipeline.config.segment import SegmentConfig
from pipeline.errors import ConfigError

LOG = logging.getLogger(__name__)

STAGES = ("convert", "preprocess", "segment", "evaluate", "cellcycle", "track", "report")
"""The stages of ``spheroid run``, in order (``evaluate`` only with ``ground_truth``)."""


def _layout_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("layout", message)


def well_name(well: str) -> str:
    """Canonical well name: ``"b02"`` -> ``"B2"`` (see :func:`pipeline.io.plate.parse_well`)."""
    from pipeline.io.plate import parse_well

    row, col = parse_well(well)
    return f"{row}{col}"


def format_dose(dose: float) -> str:
    """A dose as a short number: ``0.1``, ``3``, ``0.0316``."""
    return f"{dose:.3g}"


class WellLayout(StrictModel):
    """What one well holds."""

    condition: str | None = None
    """Name of the condition (wells of one condition are its replicates). Unset: the drug and
    dose (``palbociclib 0.1 uM``), ``control`` for control wells, else the well's name."""
    drug: str | None = None
    """Drug given to the well (with ``dose`` and ``unit``)."""
    dose: float | None = Field(None, ge=0)
    """Dose of ``drug``, in ``unit``; > 0 (a well without drug is a control)."""
    unit: str | None = None
    """Unit of ``dose`` (``nM``, ``uM``, ``ug/mL`` ...); one unit per drug across the plate."""
    control: bool = False
    """An untreated (or vehicle) well that treated wells are compared with; it takes dose 0
    in every dose-response fit."""
    replicate: int | None = Field(None, ge=1)
    """Replicate number within the condition (for the tables; replicates are the wells of a
    condition either way)."""

    @model_validator(mode="after")
    def _consistent(self) -> "WellLayout":
        if self.dose is not None and not self.unit:
            raise _layout_error(f"dose {format_dose(self.dose)} has no unit (add e.g. unit: uM)")
        if self.unit and self.dose is None:
            raise _layout_error(f"unit {self.unit!r} without a dose")
        if self.drug and self.dose is None and not self.control:
            raise _layout_error(f"drug {self.drug!r} has no dose (add dose and unit)")
        if self.dose is not None and not self.drug:
            raise _layout_error(f"dose {format_dose(self.dose)} {self.unit} without a drug (add drug: NAME)")
        if self.control and self.dose:
            raise _layout_error(f"a control well has dose {format_dose(self.dose)} {self.unit}; controls take no drug dose")
        if self.dose == 0 and not self.control:
            raise _layout_error("dose 0: mark an untreated well as control: true")
        return self

    def label(self, well: str) -> str:
        """The condition's name (see :attr:`condition`)."""
        if self.condition:
            return self.condition
        if self.drug and self.dose is not None and not self.control:
            return f"{self.drug} {format_dose(self.dose)} {self.unit}"
        return "control" if self.control else well


class RawConfig(StrictModel):
    """Where the raw microscope files are."""

    inputs: list[str] = Field(min_length=1)
    """Files, folders or glob patterns (``raw/*.ome.tif``), relative to the experiment file."""
    pattern: str | None = None
    """File-name pattern of folders of per-well, per-time-point, per-channel stacks
    (``{well}_T{t}_{channel}.tif``); sets ``convert.pattern``."""


class GroundTruthConfig(StrictModel):
    """Instance labels to score the segmentation against (``evaluate`` runs when this is set)."""

    folder: str
    """Folder of label TIFFs, relative to the experiment file."""
    pattern: str = "{well}_labels.tif"
    """File name of a well's TZYX (or ZYX for one time point) label TIFF; ``{well}`` is the
    well's name. Wells without a file are not scored; field 0 of each well is."""
    labels: str = "truth"
    """Name of the label image the truth is copied into (``labels/<name>`` in the store)."""
    wells: list[str] | None = None
    """Score only these wells; every well with a file when unset."""


class ExperimentConfig(StrictModel):
    """``spheroid run``: the whole experiment, from raw files to the report."""

    name: str = "experiment"
    """Name of the experiment (the report's title)."""
    store: str
    """The OME-Zarr plate to write: a path (relative to the experiment file) or an fsspec URL."""
    storage_options: dict[str, Any] = Field(default_factory=dict)
    """fsspec options of a remote store (``{client_kwargs: {endpoint_url: ...}}`` for S3)."""
    raw: RawConfig
    """The raw files."""
    plate: dict[str, WellLayout] = Field(default_factory=dict)
    """The plate layout: well name -> condition, drug, dose and unit, control, replicate.
    Empty: every well is its own condition and nothing is compared."""
    channels: ChannelRoles = Field(default_factory=ChannelRoles)
    """Which channel is the nuclear stain, FUCCI red, FUCCI green and the dead-cell stain
    (names as the store has them); sets ``segment.channel`` (unless that is a list of channels
    to combine) and ``cellcycle.channels``."""
    voxel_size: tuple[float, float, float] | None = None
    """``(z, y, x)`` voxel size in um where the files lack it; sets ``convert.voxel_size``."""
    time_step_s: float | None = Field(None, gt=0)
    """Seconds between time points where the files lack it; sets ``convert.time_step``."""
    ground_truth: GroundTruthConfig | None = None
    """Instance labels to evaluate the segmentation against (optional)."""
    convert: ConvertConfig = Field(default_factory=ConvertConfig)
    """Conversion settings (``configs/convert.yaml``)."""
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    """Preprocessing chain (``configs/preprocess.yaml``)."""
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    """Segmentation (``configs/segment.yaml``)."""
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    """Scoring against ``ground_truth`` (``configs/evaluate.yaml``)."""
    cellcycle: CellcycleConfig = Field(default_factory=CellcycleConfig)
    """Intensities and phases (``configs/cellcycle.yaml``)."""
    track: TrackConfig = Field(default_factory=TrackConfig)
    """Tracking (``configs/track.yaml``)."""
    report: ReportConfig = Field(default_factory=ReportConfig)
    """The report (``configs/report.yaml``)."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """One Dask cluster for every stage (replaces each stage's own ``cluster``)."""

    @field_validator("plate")
    @classmethod
    def _check_layout(cls, value: dict[str, WellLayout]) -> dict[str, WellLayout]:
        return validate_plate(value)

    @model_validator(mode="after")
    def _roles_and_metadata(self) -> "ExperimentConfig":
        conflicts = []
        single = not isinstance(self.segment.channel, list)
        if "channel" in self.segment.model_fields_set and single and self.segment.channel != self.channels.nuclear:
            conflicts.append(f"segment.channel {self.segment.channel!r} differs from channels.nuclear {self.channels.nuclear!r} "
                             "(a single channel is the nuclear role; a list combines channels for segmentation)")
        if "channels" in self.cellcycle.model_fields_set and self.cellcycle.channels != self.channels:
            conflicts.append("cellcycle.channels differs from channels (give the roles once, under channels)")
        for key, value in (("voxel_size", self.voxel_size), ("time_step", self.time_step_s)):
            mine = getattr(self.convert, key)
            if value is not None and mine is not None and tuple(map(float, mine if isinstance(mine, tuple) else (mine,))) != tuple(map(float, value if isinstance(value, tuple) else (value,))):
                conflicts.append(f"convert.{key} differs from the experiment's {key if key == 'voxel_size' else 'time_step_s'}")
        if conflicts:
            raise ValueError("; ".join(conflicts))
        return self

    # -- the stages' configs as they run ------------------------------------------------
    def stage_config(self, stage: str):
        """The config a stage runs with: its section, with the experiment's channel roles,
        metadata fallbacks and cluster applied."""
        cluster = self.cluster
        if stage == "convert":
            update: dict[str, Any] = {"cluster": cluster}
            if self.raw.pattern is not None:
                update["pattern"] = self.raw.pattern
            if self.voxel_size is not None:
                update["voxel_size"] = tuple(self.voxel_size)
            if self.time_step_s is not None:
                update["time_step"] = self.time_step_s
            return self.convert.model_copy(update=update)
        if stage == "segment":
            combined = isinstance(self.segment.channel, list)  # only given explicitly (the default is one name)
            return self.segment.model_copy(update={"channel": self.segment.channel if combined else self.channels.nuclear, "cluster": cluster})
        if stage == "cellcycle":
            return self.cellcycle.model_copy(update={"channels": self.channels, "cluster": cluster})
        if stage in ("preprocess", "evaluate"):
            return getattr(self, stage).model_copy(update={"cluster": cluster})
        if stage in ("track", "report"):
            return getattr(self, stage)
        raise KeyError(stage)

    def conditions(self, wells: list[str]) -> dict[str, dict[str, Any]]:
        """Per well (``wells``: those the store has): its layout as plain values.

        Wells missing from :attr:`plate` are their own condition.
        """
        return layout_rows(self.plate, wells)


def layout_rows(plate: dict[str, WellLayout], wells: list[str]) -> dict[str, dict[str, Any]]:
    """Per well: ``condition, drug, dose, unit, control, replicate`` (plain values).

    Wells without a layout are their own condition, not controls, without drug.
    """
    out = {}
    for well in wells:
        layout = plate.get(well, WellLayout())
        out[well] = {
            "condition": layout.label(well),
            "drug": layout.drug if not layout.control else None,
            "dose": 0.0 if layout.control else layout.dose,
            "unit": layout.unit,
            "control": bool(layout.control),
            "replicate": layout.replicate,
        }
    return out


def validate_plate(value: dict[str, WellLayout]) -> dict[str, WellLayout]:
    """Well names made canonical (``b02`` -> ``B2``) and the cross-well checks of :func:`check_plate`."""
    from pipeline.errors import SpheroidError

    out: dict[str, WellLayout] = {}
    keys: dict[str, str] = {}
    for key, layout in value.items():
        try:
            name = well_name(key)
        except SpheroidError as exc:
            raise _layout_error(f"{key}: {exc}") from None
        if name in out:
            raise _layout_error(f"wells {keys[name]!r} and {key!r} are the same well ({name})")
        out[name], keys[name] = layout, key
    check_plate(out)
    return out


class PlateLayout(StrictModel):
    """A plate layout on its own (``spheroid report --experiment``, :func:`pipeline.api.report`)."""

    plate: dict[str, WellLayout] = Field(default_factory=dict)
    """Well -> condition, drug, dose and unit, control, replicate."""

    @field_validator("plate")
    @classmethod
    def _check_layout(cls, value: dict[str, WellLayout]) -> dict[str, WellLayout]:
        return validate_plate(value)


def check_plate(plate: dict[str, WellLayout]) -> None:
    """Cross-well checks of a layout (well names already canonical).

    Raises
    ------
    pydantic_core.PydanticCustomError
        A drug at a single dose, one drug in two units, or treated wells without a control.
    """
    doses: dict[str, set[float]] = defaultdict(set)
    units: dict[str, dict[str, str]] = defaultdict(dict)
    for well, layout in plate.items():
        if layout.drug and not layout.control:
            doses[layout.drug].add(float(layout.dose))
            units[layout.drug].setdefault(layout.unit, well)
    for drug, seen in units.items():
        if len(seen) > 1:
            (u1, w1), (u2, w2) = list(seen.items())[:2]
            raise _layout_error(f"drug {drug!r} is dosed in {u1} ({w1}) and in {u2} ({w2}); use one unit per drug")
    for drug, values in doses.items():
        if len(values) == 1:
            wells = [w for w, lay in plate.items() if lay.drug == drug and not lay.control]
            raise _layout_error(
                f"drug {drug!r} has a single dose ({format_dose(next(iter(values)))} {next(iter(units[drug]))} in {', '.join(wells)}); "
                "a dose-response needs at least two doses (name a single-dose treatment as a condition without drug and dose)"
            )
    treated = [w for w, lay in plate.items() if lay.drug and not lay.control]
    if treated and not any(lay.control for lay in plate.values()):
        raise _layout_error(
            f"no control well: wells {', '.join(treated[:4])}{' ...' if len(treated) > 4 else ''} are compared with the controls "
            "(mark untreated wells with control: true)"
        )


def resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """``config`` with its relative paths (store, raw inputs, ground truth) made relative to ``base``."""

    def local(path: str) -> str:
        if "://" in path or Path(path).is_absolute():
            return path
        return str((base / path).resolve())

    update: dict[str, Any] = {
        "store": local(config.store),
        "raw": config.raw.model_copy(update={"inputs": [local(p) for p in config.raw.inputs]}),
    }
    if config.ground_truth is not None:
        update["ground_truth"] = config.ground_truth.model_copy(update={"folder": local(config.ground_truth.folder)})
    return config.model_copy(update=update)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and check an experiment file; relative paths are taken from the file's folder.

    Raises
    ------
    ConfigError
        One line naming the file, the key and the problem.
    """
    from pydantic import ValidationError

    path = Path(path)
    data = read_yaml(path)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
    return resolve_paths(config, path.resolve().parent)
