"""Which fields a conversion writes, checked from the inputs' headers before anything is created.

:func:`plan_inputs` opens every input's header (never its pixels), maps it to a
field of a well, resolves channel names and physical metadata (file first, then
configuration), and checks that the inputs agree with each other. Bad input
fails here, with one line naming the file, before a store exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.config.convert import ConvertConfig
from pipeline.errors import InputError, StoreError
from pipeline.io.ngff import DEFAULT_CHANNELS, ImageMeta
from pipeline.io.plate import parse_well
from pipeline.io.readers import Source, file_kind, open_file, strip_suffix
from pipeline.io.readers.pattern import compile_pattern, scan_pattern

LOG = logging.getLogger(__name__)

_WELL_PREFIX = re.compile(r"^([A-Za-z]{1,2}[0-9]{1,3})(?=$|[_\-. ])")


@dataclass(frozen=True)
class FieldPlan:
    """One field of the plate and where its pixels come from.

    Parameters
    ----------
    well : str
        Well name, e.g. ``"B10"``.
    index : int
        Field index within the well.
    source : Source
        The input series.
    order : tuple of int
        Store channel ``c`` is the source's channel ``order[c]``.
    meta : ImageMeta
        Resolved channel names, voxel size and time step.
    dtype : numpy.dtype
        Stored pixel type (the source's, or uint8 with ``to_uint8``).
    """

    well: str
    index: int
    source: Source
    order: tuple[int, ...]
    meta: ImageMeta
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        t, _, z, y, x = self.source.shape
        return (t, len(self.order), z, y, x)

    def describe(self) -> dict:
        """Plain-data summary (stored in provenance and used for the resume fingerprint)."""
        return {
            "well": self.well,
            "field": self.index,
            "source": self.source.label,
            "files": [[f.path, f.size, f.mtime_ns] for f in self.source.files],
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "channels": list(self.meta.channels),
            "order": list(self.order),
            "voxel_size": list(self.meta.voxel_size),
            "time_step": self.meta.time_step,
        }


def open_inputs(inputs: Sequence[str | os.PathLike], config: ConvertConfig) -> list[tuple[Source, str | None]]:
    """Open the headers of every input; returns ``(source, file name for a well guess)`` pairs.

    Folders are scanned with ``config.pattern``; files whose names match the pattern
    are grouped the same way; other files are opened by type.
    """
    if not inputs:
        raise InputError("no inputs given")
    regex = compile_pattern(config.pattern)
    channels = config.channels
    out: list[tuple[Source, str | None]] = []
    loose: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file()]
            for src in scan_pattern(files, config.pattern, channel_map=config.channel_map, channels=channels, first_t=config.first_t, label=str(path)):
                out.append((src, None))
        elif path.is_file():
            if regex.fullmatch(path.name):
                loose.append(path)
            else:
                file_kind(path)
                out.extend((src, strip_suffix(path)) for src in open_file(path, axes=config.axes))
        else:
            raise InputError(f"{path}: no such file or folder")
    if loose:
        parents = {str(p.parent) for p in loose}
        label = parents.pop() if len(parents) == 1 else f"{len(loose)} files matching {config.pattern!r}"
        for src in scan_pattern(loose, config.pattern, channel_map=config.channel_map, channels=channels, first_t=config.first_t, label=label):
            out.append((src, None))
    return out


def resolve_channels(source: Source, config: ConvertConfig) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Channel names in store order, and which source channel each one is.

    Raises
    ------
    InputError
        For a channel name outside ``config.channels``, a configured channel the
        file lacks, a channel count that does not match, or duplicate names.
    """
    n = source.n_channels
    names = source.meta.channels
    if names is not None:
        names = tuple(config.channel_map.get(c, c) for c in names)
        if len(set(names)) != len(names):
            raise InputError(f"{source.label}: duplicate channel names {list(names)}")
    wanted = config.channels
    if wanted is None:
        if names is None:
            names = DEFAULT_CHANNELS if n == len(DEFAULT_CHANNELS) else tuple(f"c{i}" for i in range(n))
            LOG.warning("%s: no channel names in the file; using %s (set 'channels' to name them)", source.label, ", ".join(names))
        return names, tuple(range(n))
    if names is None:
        if len(wanted) != n:
            raise InputError(f"{source.label}: has {n} channel(s) but 'channels' lists {len(wanted)}: {', '.join(wanted)}")
        return tuple(wanted), tuple(range(n))
    unknown = [c for c in names if c not in wanted]
    if unknown:
        raise InputError(f"{source.label}: unknown channel name(s) {', '.join(unknown)} (expected {', '.join(wanted)}); map them with channel_map")
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InputError(f"{source.label}: lacks channel(s) {', '.join(missing)} (has {', '.join(names)})")
    return tuple(wanted), tuple(names.index(c) for c in wanted)


def resolve_meta(source: Source, names: tuple[str, ...], config: ConvertConfig, used: dict[str, bool]) -> ImageMeta:
    """Voxel size and time step: the file's where present, else the configuration's, else 1.

    ``used`` records whether the configured values filled any gap (for the warning
    about options that override nothing).
    """
    voxel = []
    for axis, value, fallback in zip("zyx", source.meta.voxel_size, config.voxel_size or (None, None, None)):
        if value is None and fallback is not None:
            used["voxel_size"] = True
            value = fallback
        if value is None:
            if axis != "z" or source.shape[2] > 1:
                LOG.warning("%s: no %s voxel size in the file or config; using 1.0 um (set voxel_size)", source.label, axis)
            value = 1.0
        voxel.append(value)
    step = source.meta.time_step
    if step is None and config.time_step is not None:
        used["time_step"] = True
        step = config.time_step
    if step is None:
        if source.n_timepoints > 1:
            LOG.warning("%s: no time step in the file or config; using 1 s (set time_step)", source.label)
        step = 1.0
    return ImageMeta(channels=names, voxel_size=tuple(voxel), time_step=step)


def stored_dtype(source: Source, config: ConvertConfig) -> np.dtype:
    """The store's pixel type for ``source``: unchanged, or uint8 with ``to_uint8``."""
    dtype = source.dtype
    if dtype.kind not in "uif" and dtype != np.bool_:
        raise InputError(f"{source.label}: pixel type {dtype} is not supported (integers or floats only)")
    if config.to_uint8:
        if dtype.kind == "f" and config.uint8_range is None:
            raise InputError(f"{source.label}: {dtype} data need 'uint8_range' to be converted to 8 bits")
        return np.dtype("uint8")
    out = np.dtype("uint8") if dtype == np.bool_ else dtype
    if out not in (np.uint8, np.uint16):
        LOG.warning(
            "%s: %s pixels are stored as %s; preprocess and segment take uint8 or uint16 images "
            "(set to_uint8 with uint8_range to convert them to 8 bits)",
            source.label, dtype, out,
        )
    return out


def uint8_range(plan: FieldPlan, config: ConvertConfig) -> tuple[float, float] | None:
    """The ``(low, high)`` mapped to 0-255 for a field, or ``None`` when no rescaling applies."""
    if not config.to_uint8 or plan.source.dtype == np.uint8:
        return None
    if config.uint8_range is not None:
        return tuple(float(v) for v in config.uint8_range)
    info = np.iinfo(plan.source.dtype) if plan.source.dtype.kind in "ui" else None
    return (float(info.min), float(info.max)) if info is not None else (0.0, 1.0)


def plan_inputs(inputs: Sequence[str | os.PathLike], config: ConvertConfig) -> list[FieldPlan]:
    """Check every input and decide the plate's fields.

    Parameters
    ----------
    inputs : sequence of path
        Files (OME-TIFF, ImageJ TIFF, ND2, pattern-named stacks) and folders.
    config : ConvertConfig
        Pattern, channel names, metadata fallbacks, ``to_uint8``, well naming.

    Returns
    -------
    list of FieldPlan
        In input order; fields of the same well are numbered 0, 1, ...

    Raises
    ------
    InputError
        Naming the file and the problem, before any output exists.
    """
    opened = open_inputs(inputs, config)
    named: list[str | None] = []
    for source, stem in opened:
        named.append(_well_name(source, stem, config))
    taken = {w for w in named if w}
    free = _free_wells(taken)
    plans, counts, used = [], {}, {"voxel_size": False, "time_step": False}
    first: FieldPlan | None = None
    for (source, _), well in zip(opened, named):
        well = well or next(free)
        names, order = resolve_channels(source, config)
        plan = FieldPlan(well, counts.get(well, 0), source, order, resolve_meta(source, names, config, used), stored_dtype(source, config))
        counts[well] = plan.index + 1
        if first is not None and plan.meta.channels != first.meta.channels:
            raise InputError(f"{source.label}: channels {', '.join(plan.meta.channels)} differ from {first.source.label}: {', '.join(first.meta.channels)}")
        if first is not None and plan.dtype != first.dtype:
            raise InputError(f"{source.label}: pixel type {plan.dtype} differs from {first.source.label}: {first.dtype}")
        first = first or plan
        plans.append(plan)
    for key in ("voxel_size", "time_step"):
        if getattr(config, key) is not None and not used[key]:
            LOG.warning("%s %s from the options overrides nothing: every input's metadata has it", key, getattr(config, key))
    LOG.info("%d field(s): %s", len(plans), ", ".join(f"{p.well}/{p.index} {p.shape} {p.dtype}" for p in plans))
    return plans


def _well_name(source: Source, stem: str | None, config: ConvertConfig) -> str | None:
    candidate = source.well or config.well
    if candidate is None and stem is not None:
        match = _WELL_PREFIX.match(stem)
        candidate = match.group(1) if match else None
    if candidate is None:
        return None
    try:
        row, col = parse_well(candidate)
    except StoreError as exc:
        raise InputError(f"{source.label}: {exc}") from None
    return f"{row}{col}"


def _free_wells(taken: set[str]):
    for row in "ABCDEFGHIJKLMNOP":
        for col in range(1, 25):
            if f"{row}{col}" not in taken:
                yield f"{row}{col}"
    raise InputError("more than 384 inputs without a well name; set well names in the file names")


def fingerprint(plans: Sequence[FieldPlan], config: ConvertConfig) -> str:
    """A hash of the inputs (paths, sizes, times), the planned fields and the settings that shape the output.

    A store whose fingerprint matches may be resumed; any other needs ``--overwrite``.
    """
    settings = {k: config.model_dump(mode="json")[k] for k in ("to_uint8", "uint8_range", "chunk_yx", "compression_level")}
    blob = json.dumps({"fields": [p.describe() for p in plans], "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
