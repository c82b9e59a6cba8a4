"""What every reader returns: a lazy, picklable description of one image series.

A reader opens a file's header only; pixels are read one time point at a time by
:meth:`Source.read`, inside whichever process (a Dask worker) calls it. Physical
metadata that the file does not carry is ``None`` here; the converter fills it
from options or configuration.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pipeline.errors import InputError

LOG = logging.getLogger(__name__)

AXES = "TCZYX"


@dataclass(frozen=True)
class SourceMeta:
    """Physical metadata found in a file; every entry may be missing (``None``).

    Parameters
    ----------
    channels : tuple of str, optional
        Channel names, in the file's channel order.
    voxel_size : tuple of (float or None)
        ``(z, y, x)`` in micrometres; each component ``None`` when absent.
    time_step : float, optional
        Seconds between time points.
    """

    channels: tuple[str, ...] | None = None
    voxel_size: tuple[float | None, float | None, float | None] = (None, None, None)
    time_step: float | None = None

    def __post_init__(self) -> None:
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        vs = tuple(None if v is None or not np.isfinite(v) or v <= 0 else float(v) for v in self.voxel_size)
        if len(vs) != 3:
            raise ValueError("voxel_size has three components (z, y, x)")
        object.__setattr__(self, "voxel_size", vs)
        if self.time_step is not None and (not np.isfinite(self.time_step) or self.time_step <= 0):
            object.__setattr__(self, "time_step", None)


@dataclass(frozen=True)
class FileStamp:
    """Identity of an input file for resume checks: path, size and modification time."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "FileStamp":
        st = os.stat(path)
        return cls(os.path.abspath(path), int(st.st_size), int(st.st_mtime_ns))


@dataclass(frozen=True)
class Source:
    """One image series (``T, C, Z, Y, X``) that can be read one time point at a time.

    Subclasses implement :meth:`_read`; instances are small and picklable, so a
    Dask task receives the source and reads its own time point.

    Parameters
    ----------
    label : str
        What error messages name: the file (and series), or the folder and well.
    shape : tuple of int
        ``(T, C, Z, Y, X)``; missing axes have length 1.
    dtype : numpy.dtype
        Pixel type, as stored in the file.
    meta : SourceMeta
        Physical metadata found in the file.
    well : str, optional
        Well name the file itself gives (folder patterns), else ``None``.
    files : tuple of FileStamp
        Every file the series is read from.
    """

    label: str
    shape: tuple[int, int, int, int, int]
    dtype: np.dtype
    meta: SourceMeta
    well: str | None = None
    files: tuple[FileStamp, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if len(self.shape) != 5 or min(self.shape) < 1:
            raise InputError(f"{self.label}: cannot make a t, c, z, y, x image of shape {self.shape}")

    #: Whether reading one channel costs as much as reading all (e.g. ND2 frames hold every channel).
    channels_together = False

    @property
    def n_timepoints(self) -> int:
        return self.shape[0]

    @property
    def n_channels(self) -> int:
        return self.shape[1]

    def read(self, t: int, channels: Sequence[int] | None = None) -> np.ndarray:
        """Read time point ``t`` as a ``(C, Z, Y, X)`` array.

        Parameters
        ----------
        t : int
            Time point, ``0 <= t < T``.
        channels : sequence of int, optional
            Only these channels (in this order); all by default.

        Returns
        -------
        numpy.ndarray
            ``(len(channels), Z, Y, X)`` of :attr:`dtype`.

        Raises
        ------
        InputError
            Naming the file when it is unreadable or truncated, or holds other
            data than its header announced.
        """
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"{self.label}: time point {t} outside 0..{self.shape[0] - 1}")
        channels = list(range(self.shape[1])) if channels is None else [int(c) for c in channels]
        data = self._read(int(t), channels)
        expected = (len(channels), *self.shape[2:])
        if data.shape != expected or data.dtype != self.dtype:
            raise InputError(
                f"{self.label}: time point {t} holds {data.dtype} data of shape {data.shape}, "
                f"the header announced {self.dtype} {expected}"
            )
        return data

    def _read(self, t: int, channels: list[int]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def for_timepoint(self, t: int) -> "Source":
        """What a task converting time point ``t`` needs to carry: by default the source itself.

        Sources that list a file per time point (folder series) return a copy that
        keeps only time point ``t``'s files, so a task's size does not grow with the
        length of the series (a 1,000-point series would otherwise send every task
        all 3,000 file names and stamps).
        """
        return self


def check_files_unchanged(source: Source) -> None:
    """Raise :class:`InputError` if a file of ``source`` changed size since its header was read.

    A file that is still being written, or was replaced, would otherwise yield
    data that disagrees with the plan made from its header.
    """
    for stamp in source.files:
        try:
            size = os.stat(stamp.path).st_size
        except OSError as exc:
            raise InputError(f"{stamp.path}: cannot read file ({exc.strerror or exc})") from exc
        if size != stamp.size:
            raise InputError(f"{stamp.path}: file changed size since it was checked ({stamp.size} -> {size} bytes)")
