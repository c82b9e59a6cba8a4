"""Folders of per-well, per-time-point, per-channel TIFF stacks matched by a filename pattern.

The thesis data are named like ``B10_T01_Cyr.tif``: well, time point (counted
from 1), channel token. A pattern such as ``{well}_T{t}_{channel}.tif`` names
those fields; ``*`` matches any text; a ``.tif`` ending also matches ``.tiff``.
Every matched file holds one z-stack (``ZYX``) or one section (``YX``).
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.errors import ConfigError, InputError
from pipeline.io.readers.base import Source, SourceMeta
from pipeline.io.readers.tiff import AxisLayout, _open_cached, _short, open_tiff

LOG = logging.getLogger(__name__)

FIELDS = {"well": r"(?P<well>.+?)", "t": r"(?P<t>[0-9]+)", "channel": r"(?P<channel>.+?)"}
_TOKEN = re.compile(r"\{([^{}]*)\}|\*")


def compile_pattern(pattern: str) -> re.Pattern:
    """Turn a filename pattern into a regular expression matching whole file names.

    Parameters
    ----------
    pattern : str
        Literal text with the fields ``{well}``, ``{t}`` and ``{channel}`` (the last
        one required) and ``*`` wildcards, e.g. ``"{well}_T{t}_C{channel}.tif"``.

    Raises
    ------
    ConfigError
        For an unknown or repeated field, or a pattern without ``{channel}``.

    Examples
    --------
    >>> compile_pattern("{well}_T{t}_{channel}.tif").fullmatch("B10_T01_Cyr.tiff").group("well", "t", "channel")
    ('B10', '01', 'Cyr')
    """
    if "/" in pattern or os.sep in pattern:
        raise ConfigError(f"pattern {pattern!r}: matches file names only, not folders")
    parts, seen, pos = [], set(), 0
    for match in _TOKEN.finditer(pattern):
        parts.append(re.escape(pattern[pos : match.start()]))
        pos = match.end()
        if match.group(0) == "*":
            parts.append(".*")
            continue
        name = match.group(1)
        if name not in FIELDS:
            raise ConfigError(f"pattern {pattern!r}: unknown field {{{name}}}; use {{well}}, {{t}}, {{channel}} and *")
        if name in seen:
            raise ConfigError(f"pattern {pattern!r}: field {{{name}}} appears twice")
        seen.add(name)
        parts.append(FIELDS[name])
    tail = pattern[pos:]
    if tail.lower().endswith(".tif"):
        parts.append(re.escape(tail[:-4]) + r"\.[tT][iI][fF][fF]?")
    else:
        parts.append(re.escape(tail))
    if "channel" not in seen:
        raise ConfigError(f"pattern {pattern!r}: needs a {{channel}} field (one file per channel)")
    return re.compile("".join(parts))


@dataclass(frozen=True, kw_only=True)
class PatternSource(Source):
    """One well of a folder series: file ``paths[t][c]`` holds the z-stack of time point t, channel c.

    Parameters
    ----------
    paths : tuple of tuple of str
        ``T x C`` file paths.
    layout : AxisLayout
        The (shared) page layout of one file.
    """

    paths: tuple[tuple[str, ...], ...]
    layout: AxisLayout

    def for_timepoint(self, t: int) -> "PatternSource":
        """A copy holding only time point ``t``'s files (see :meth:`Source.for_timepoint`)."""
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"{self.label}: time point {t} outside 0..{self.shape[0] - 1}")
        row = self.paths[t]
        mine = [os.path.abspath(p) for p in row]
        files = self.files[t * len(row) : (t + 1) * len(row)]  # stamps are made in the order of paths
        if [s.path for s in files] != mine:
            wanted = set(mine)
            files = tuple(s for s in self.files if s.path in wanted)
        paths = ((),) * t + (row,) + ((),) * (len(self.paths) - t - 1)  # a byte per other time point
        return replace(self, paths=paths, files=files)

    def _read(self, t: int, channels: list[int]) -> np.ndarray:
        if not self.paths[t]:
            raise IndexError(f"{self.label}: this copy of the source holds no files for time point {t} (see for_timepoint)")
        _, _, z, y, x = self.shape
        out = np.empty((len(channels), z, y, x), dtype=self.dtype)
        stamps = {s.path: s for s in self.files}
        for i, c in enumerate(channels):
            path = self.paths[t][c]
            keys = self.layout.page_indices(0, [0])
            try:
                with _open_cached(stamps[os.path.abspath(path)]) as tif:
                    # decode straight into the output (a stack of z pages, or one page)
                    target = out[i] if len(keys) > 1 else out[i, 0]
                    data = tif.asarray(key=keys, series=0, maxworkers=1, out=target)
            except Exception as exc:
                raise InputError(f"{path}: cannot read ({type(exc).__name__}: {_short(exc)}); truncated or corrupt file?") from exc
            if data.size != z * y * x or data.dtype != self.dtype:
                raise InputError(f"{path}: holds {data.dtype} {data.shape}, expected {self.dtype} {(z, y, x)}")
        return out


def scan_pattern(
    files: Sequence[str | os.PathLike],
    pattern: str,
    *,
    channel_map: Mapping[str, str],
    channels: Sequence[str] | None = None,
    first_t: int = 1,
    label: str | None = None,
) -> list[PatternSource]:
    """Group files matching ``pattern`` by well and check that they form complete series.

    Parameters
    ----------
    files : sequence of path
        Candidate files (e.g. a folder's listing); names that do not match are skipped.
    pattern : str
        See :func:`compile_pattern`.
    channel_map : mapping
        Channel token in the file name -> channel name, e.g. ``{"Cyr": "Cy3"}``.
    channels : sequence of str, optional
        Channel names in store order; tokens equal to one of them need no map
        entry. Without it, the order of ``channel_map``'s values is used.
    first_t : int
        Number of the first time point in file names (the thesis counts from 1).
    label : str, optional
        What error messages call the group of files (the folder).

    Returns
    -------
    list of PatternSource
        One per well, in well order.

    Raises
    ------
    InputError
        When nothing matches, for an unknown channel token, a duplicate, a missing
        (time point, channel) file, or files whose shapes or dtypes differ; each
        message names the file or what is missing.
    """
    regex = compile_pattern(pattern)
    files = [Path(f) for f in files]
    label = label or (str(files[0].parent) if files else "inputs")
    known = dict(channel_map)
    wanted = list(channels) if channels else None
    groups: dict[str | None, dict[tuple[int, str], Path]] = defaultdict(dict)
    for path in sorted(files):
        m = regex.fullmatch(path.name)
        if m is None:
            LOG.debug("%s: does not match pattern %r; skipped", path, pattern)
            continue
        fields = m.groupdict()
        token = fields["channel"]
        if token in known:
            name = known[token]
        elif (wanted and token in wanted) or (not known and not wanted):
            name = token
        else:
            allowed = sorted(set(known) | set(wanted or []))
            raise InputError(f"{path}: unknown channel {token!r} (known: {', '.join(allowed)}); add it to channel_map")
        t = int(fields["t"]) if fields.get("t") is not None else first_t
        if t < first_t:
            raise InputError(f"{path}: time point {t} is before the first one ({first_t}); set first_t")
        key = (t - first_t, name)
        group = groups[fields.get("well")]
        if key in group:
            raise InputError(f"{path}: same well, time point and channel {name!r} as {group[key]}")
        group[key] = path
    if not groups:
        tiffs = [p.name for p in files if p.suffix.lower() in (".tif", ".tiff")]
        hint = f"; files there look like {tiffs[0]!r}" if tiffs else "; no .tif files found"
        raise InputError(f"{label}: pattern {pattern!r} matches no file{hint}")
    order = wanted or list(dict.fromkeys(known.values()))
    sources = []
    for well in sorted(groups, key=lambda w: (w is None, str(w))):
        sources.append(_well_source(label, well, groups[well], order, wanted is not None, first_t))
    return sources


def _well_source(label, well, group, order, strict, first_t) -> PatternSource:
    where = f"{label}: well {well}" if well else label
    present = {name for _, name in group}
    names = [c for c in order if c in present] + sorted(present - set(order))
    if strict:
        missing = [c for c in order if c not in present]
        if missing:
            raise InputError(f"{where}: no files for channel(s) {', '.join(missing)}")
    n_t = max(t for t, _ in group) + 1
    missing = [(t, c) for t in range(n_t) for c in names if (t, c) not in group]
    if missing:
        shown = ", ".join(f"t={t + first_t} {c}" for t, c in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise InputError(f"{where}: missing file(s) for {shown}{more}")
    paths = tuple(tuple(str(group[(t, c)]) for c in names) for t in range(n_t))
    first = None
    stamps = []
    for row in paths:
        for path in row:
            src = open_tiff(path)[0]
            stamps.extend(src.files)
            if src.shape[0] != 1 or src.shape[1] != 1:
                raise InputError(f"{path}: holds {src.shape[0]} time points and {src.shape[1]} channels; expected one z-stack per file")
            if first is None:
                first = src
            elif src.shape != first.shape or src.dtype != first.dtype:
                raise InputError(
                    f"{path}: {src.dtype} stack of shape {src.shape[2:]} differs from {first.path}: {first.dtype} {first.shape[2:]}"
                )
            elif src.layout != first.layout:
                raise InputError(f"{path}: page layout differs from {first.path}")
    meta = SourceMeta(channels=tuple(names), voxel_size=first.meta.voxel_size, time_step=first.meta.time_step)
    shape = (n_t, len(names), *first.shape[2:])
    return PatternSource(label=where, shape=shape, dtype=first.dtype, meta=meta, well=well, files=tuple(stamps), paths=paths, layout=first.layout)
