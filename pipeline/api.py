"""Every stage from Python, with the command line's config models: ``from pipeline import api``.

>>> from pipeline import api                                          # doctest: +SKIP
>>> with api.cluster() as client:                                     # doctest: +SKIP
...     api.convert(["raw/"], "screen.zarr", client=client)
...     api.segment("screen.zarr", client=client)
...     api.cellcycle("screen.zarr", client=client)
...     api.track("screen.zarr")
>>> api.report("screen.zarr", layout={"B2": {"control": True}}).url   # doctest: +SKIP

Each function takes its stage's config as the pydantic model (``ConvertConfig``...), a dict of
its keys, a YAML file, or nothing (the defaults), validated as the CLI's ``-c`` does, and an
optional Dask ``client`` so that several stages share one cluster (:func:`cluster`). They
return small result records (counts, seconds, paths), never volumes; the data stay in the
store. Errors are the same :class:`~pipeline.errors.SpheroidError` lines the CLI prints.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

from pydantic import BaseModel

from pipeline.config.cellcycle import CellcycleConfig, TrackConfig
from pipeline.config.cluster import ClusterConfig
from pipeline.config.convert import ConvertConfig
from pipeline.config.experiment import ExperimentConfig
from pipeline.config.preprocess import PreprocessConfig
from pipeline.config.report import ReportConfig
from pipeline.config.segment import SegmentConfig

__all__ = [
    "StageResult", "cluster", "convert", "preprocess", "segment", "cellcycle", "track", "report", "run",
    "ConvertConfig", "PreprocessConfig", "SegmentConfig", "CellcycleConfig", "TrackConfig", "ReportConfig",
    "ExperimentConfig", "ClusterConfig",
]

M = TypeVar("M", bound=BaseModel)
ConfigLike = BaseModel | dict | str | os.PathLike | None


@dataclass(frozen=True)
class StageResult:
    """What a stage did: counts and time, not data."""

    stage: str
    store: str
    fields: list[str]
    volumes: int
    """Volumes (or time points) processed in this call."""
    skipped: int
    """Those already done (resumed past)."""
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    """The stage's own summary (nuclei counts, phase model, ...)."""

    def __getattr__(self, name: str) -> Any:  # result.nuclei, result.tracks ...
        details = self.__dict__.get("details", {})
        if name in details:
            return details[name]
        raise AttributeError(name)


def load(model: type[M], config: ConfigLike) -> M:
    """``config`` as a validated ``model``: the model itself, a dict, a YAML file, or ``None``.

    Raises
    ------
    ConfigError
        Naming the file (or ``<dict>``) and the key.
    """
    from pydantic import ValidationError

    from pipeline.config.base import format_validation_error, load_config
    from pipeline.errors import ConfigError

    if config is None:
        return model()
    if isinstance(config, model):
        return config
    if isinstance(config, dict):
        try:
            return model.model_validate(config)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "<dict>")) from None
    if isinstance(config, (str, os.PathLike)):
        return load_config(model, config)
    raise TypeError(f"config must be a {model.__name__}, a dict or a YAML path, not {type(config).__name__}")


@contextmanager
def cluster(config: ClusterConfig | dict | None = None) -> Iterator[Any]:
    """A Dask client for several stages (closed with its cluster at the end of the block)."""
    from pipeline.cluster import open_client

    with open_client(load(ClusterConfig, config)) as client:
        yield client


def _plate(store: str, storage_options: dict[str, Any] | None, mode: str = "r+"):
    from pipeline.io.plate import Plate

    return Plate.open(str(store), mode=mode, storage_options=storage_options)


def convert(inputs: Sequence[str | os.PathLike], store: str | os.PathLike, config: ConfigLike = None, *, overwrite: bool = False,
            storage_options: dict[str, Any] | None = None, client=None, progress: bool = True) -> StageResult:
    """Convert raw files and folders into the plate store (``spheroid convert``)."""
    from pipeline.convert.run import convert as run

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = run([Path(p) for p in inputs], str(store), load(ConvertConfig, config), overwrite=overwrite,
              storage_options=storage_options, progress=progress, client=client)
    return StageResult("convert", out["store"], out["fields"], out["written"], out["skipped"], out["seconds"], out)


def preprocess(store: str | os.PathLike, config: ConfigLike = None, *, fields: Sequence[str] | None = None, overwrite: bool = False,
               storage_options: dict[str, Any] | None = None, client=None, progress: bool = True) -> StageResult:
    """Clean every channel (``spheroid preprocess``)."""
    from pipeline.preprocess.runner import run_preprocess

    out = run_preprocess(_plate(store, storage_options), load(PreprocessConfig, config), fields=fields, overwrite=overwrite, progress=progress, client=client)
    return StageResult("preprocess", str(store), out["fields"], out["volumes"], out["skipped"], out["seconds"], out)


def segment(store: str | os.PathLike, config: ConfigLike = None, *, fields: Sequence[str] | None = None, overwrite: bool = False,
            storage_options: dict[str, Any] | None = None, client=None, progress: bool = True) -> StageResult:
    """Segment every nucleus of every time point (``spheroid segment``)."""
    from pipeline.segment.runner import run_segment

    out = run_segment(_plate(store, storage_options), load(SegmentConfig, config), fields=fields, overwrite=overwrite, progress=progress, client=client)
    return StageResult("segment", str(store), out["fields"], out["volumes"], out["skipped"], out["seconds"], out)


def cellcycle(store: str | os.PathLike, config: ConfigLike = None, *, fields: Sequence[str] | None = None, overwrite: bool = False,
              storage_options: dict[str, Any] | None = None, client=None, progress: bool = True) -> StageResult:
    """Intensities and FUCCI phase of every nucleus (``spheroid cellcycle``)."""
    from pipeline.cellcycle.runner import run_cellcycle

    out = run_cellcycle(_plate(store, storage_options), load(CellcycleConfig, config), fields=fields, overwrite=overwrite, progress=progress, client=client)
    return StageResult("cellcycle", str(store), out["fields"], out["volumes"], out["skipped"], out["seconds"], out)


def track(store: str | os.PathLike, config: ConfigLike = None, *, fields: Sequence[str] | None = None,
          storage_options: dict[str, Any] | None = None, progress: bool = True) -> StageResult:
    """Link nuclei over time and summarise each track (``spheroid track``)."""
    from pipeline.cellcycle.runner import run_track

    out = run_track(_plate(store, storage_options), load(TrackConfig, config), fields=fields, progress=progress)
    return StageResult("track", str(store), out["fields"], out["nuclei"], 0, out["seconds"], out)


def report(store: str | os.PathLike, config: ConfigLike = None, *, layout: dict[str, Any] | None = None, title: str | None = None,
           nuclear_channel: str = "Hoechst", storage_options: dict[str, Any] | None = None):
    """Write ``<store>/report/`` (``spheroid report``); returns a :class:`pipeline.report.run.ReportResult`.

    ``layout`` maps wells to ``{condition, drug, dose, unit, control, replicate}``, checked as
    an experiment file's ``plate`` section is.
    """
    from pipeline.report.run import write_report

    plate = _plate(store, storage_options, mode="r")
    rows = None
    if layout is not None:
        from pipeline.config.experiment import PlateLayout, layout_rows

        checked = load(PlateLayout, {"plate": layout})
        rows = layout_rows(checked.plate, sorted({f.well for f in plate.fields()}))
    return write_report(plate, load(ReportConfig, config), layout=rows, title=title, nuclear_channel=nuclear_channel)


def run(experiment: ExperimentConfig | str | os.PathLike, *, start: str | None = None, stop: str | None = None, overwrite: bool = False,
        dry_run: bool = False, client=None, progress: bool = True):
    """Run a whole experiment (``spheroid run``); returns a :class:`pipeline.experiment.run.RunResult`.

    ``experiment`` is an experiment file (relative paths in it are taken from its folder) or
    an :class:`ExperimentConfig` (relative paths from the working directory).
    """
    from pipeline.config.experiment import load_experiment, resolve_paths
    from pipeline.experiment.run import run_experiment

    if isinstance(experiment, ExperimentConfig):
        config, source = resolve_paths(experiment, Path.cwd()), "<ExperimentConfig>"
    else:
        config, source = load_experiment(experiment), str(experiment)
    return run_experiment(config, source=source, start=start, stop=stop, overwrite=overwrite, dry_run=dry_run, progress=progress, client=client)
