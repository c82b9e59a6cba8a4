"""Configuration of ``spheroid convert``: raw TIFF / ND2 files -> the OME-Zarr plate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig


def _default_channel_map() -> dict[str, str]:
    return {"Hoechst": "Hoechst", "Cy3": "Cy3", "Cyr": "Cy3", "GFP": "GFP"}


class ConvertConfig(StrictModel):
    """How raw microscope files become the plate store's ``raw`` images."""

    pattern: str = "{well}_T{t}_{channel}.tif"
    """File-name pattern for folders of per-well, per-time-point, per-channel stacks
    (the thesis' ``B10_T01_Cyr.tif``). Fields: ``{well}``, ``{t}`` (an integer),
    ``{channel}`` (required); ``*`` matches any text; ``.tif`` also matches ``.tiff``.
    Files given one by one whose names match it are grouped the same way."""
    first_t: int = Field(1, ge=0)
    """Number of the first time point in file names (the thesis counts from 1)."""
    channel_map: dict[str, str] = Field(default_factory=_default_channel_map)
    """Channel token in file names, or channel name in file metadata -> channel name in
    the store, e.g. ``{Cyr: Cy3}``. A file-name token that is neither here nor in
    ``channels`` is an error."""
    channels: list[str] | None = None
    """Channel names in store order, e.g. ``[Hoechst, Cy3, GFP]``. Files with named
    channels are reordered to it (a name outside it is an error); files without names
    get these names in file order. Unset: the file's names, else Hoechst, Cy3, GFP for
    three channels, else ``c0, c1, ...``."""
    axes: str | None = None
    """TIFF only: axis letters to use instead of the file's, e.g. ``TZCYX``, for files
    whose metadata does not say (unnamed stack axes are otherwise taken as Z, then T)."""
    voxel_size: tuple[float, float, float] | None = None
    """``(z, y, x)`` voxel size in micrometres, used only where a file's metadata lacks
    it (thesis data: ``[5.0, 1.243, 1.243]``). A warning says when it overrides nothing."""
    time_step: float | None = Field(None, gt=0)
    """Seconds between time points, used only where a file's metadata lacks it
    (thesis data: 1800)."""
    well: str | None = None
    """Well of single files and of patterns without ``{well}`` (several such inputs become
    fields 0, 1, ... of it). Unset: from the file name (``B10.ome.tif`` -> B10), else the
    next free well A1, A2, ... A ``{well}`` in a pattern always wins."""
    to_uint8: bool = False
    """Store 8-bit data (the thesis' NIS-Elements export did this). Off by default:
    16-bit data stay 16-bit. Values are mapped linearly from ``uint8_range`` to 0-255."""
    uint8_range: tuple[float, float] | None = None
    """``(low, high)`` mapped to 0 and 255 by ``to_uint8`` (clipped outside). Unset: the
    input type's full range (0-65535 for 16-bit), the thesis' rescaling. The same
    range is used for every time point, so intensities stay comparable over time."""
    chunk_yx: tuple[int, int] = (256, 256)
    """Chunk size in y and x; a chunk holds all z of one (t, c) volume."""
    compression_level: int = Field(2, ge=0, le=9)
    """Blosc-zstd compression level of the store (0 = none, 9 = smallest). Blosc's level ``L`` is
    zstd's ``2L - 1``: the default 2 is zstd's own default, which on 16-bit stacks encodes
    1.3-1.6x faster than 3 for chunks at most ~1.5% larger."""
    verify: bool = True
    """Read every written chunk back and compare it with what was written (and, once per
    worker, decode a whole volume through zarr) before marking the volume done."""
    codec_threads: int | None = Field(1, ge=1)
    """Threads zarr uses in each worker process (its ``threading.max_workers``) for store
    I/O and for arrays written through zarr's codec pipeline. One suits one
    single-threaded worker per core: the workers fill the cores and each worker's
    memory stays flat over a long series. ``null``: zarr's default."""
    worker_start: Literal["auto", "fork", "forkserver", "spawn"] = "auto"
    """How a local cluster starts its worker processes. ``auto``: ``fork`` on Linux with
    Python < 3.12 (workers inherit the already imported readers and start in about a
    second instead of three or four: a large share of a short conversion), else Dask's
    default (``spawn``)."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where the time points are converted in parallel."""

    @field_validator("axes")
    @classmethod
    def _axes_letters(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.upper()
        if not set(value) <= set("TCZYXSQI") or "Y" not in value or "X" not in value:
            raise ValueError("axes are letters from T, C, Z, Y, X (S for samples), including Y and X")
        return value

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value or len(set(value)) != len(value) or not all(v.strip() for v in value):
                raise ValueError("channel names must be non-empty and unique")
        return value

    @field_validator("voxel_size")
    @classmethod
    def _positive_voxel(cls, value):
        if value is not None and min(value) <= 0:
            raise ValueError("voxel sizes must be positive")
        return value

    @field_validator("chunk_yx")
    @classmethod
    def _positive_chunks(cls, value):
        if min(value) < 1:
            raise ValueError("chunk sizes must be at least 1")
        return value

    @model_validator(mode="after")
    def _range_order(self) -> "ConvertConfig":
        if self.uint8_range is not None and not self.uint8_range[0] < self.uint8_range[1]:
            raise ValueError("uint8_range needs low < high")
        return self
