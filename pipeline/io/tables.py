"""Per-field tables (one row per nucleus, per time point...) stored as Parquet in the plate.

A table lives at ``<field>/tables/<name>.parquet`` (see :meth:`Field.table_url`), beside
the images and labels it describes, on any fsspec filesystem the store is on. Writes go
to a temporary key first and are then moved into place, so a reader never sees half a table.
"""

from __future__ import annotations

import logging
import uuid

import pandas as pd

from pipeline.errors import StoreError
from pipeline.io.plate import Field

LOG = logging.getLogger(__name__)


def _fs_path(field: Field, name: str):
    fs, _ = field.plate.location.filesystem()
    url = field.table_url(name)
    return fs, fs._strip_protocol(url)


def write_table(field: Field, name: str, table: pd.DataFrame) -> str:
    """Write ``table`` as ``tables/<name>.parquet`` of ``field``; returns its URL."""
    fs, path = _fs_path(field, name)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    with fs.open(tmp, "wb") as fh:
        table.to_parquet(fh, index=False)
    fs.mv(tmp, path)
    LOG.info("wrote table %s (%d rows)", field.table_url(name), len(table))
    return field.table_url(name)


def read_table(field: Field, name: str) -> pd.DataFrame:
    """Read ``tables/<name>.parquet`` of ``field``.

    Raises
    ------
    StoreError
        If the table does not exist or cannot be read.
    """
    fs, path = _fs_path(field, name)
    fs.invalidate_cache(path.rsplit("/", 1)[0])  # written by another process (a worker): not a cached listing
    if not fs.exists(path):
        raise StoreError(f"{field.table_url(name)}: no such table")
    try:
        with fs.open(path, "rb") as fh:
            return pd.read_parquet(fh)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
        raise StoreError(f"{field.table_url(name)}: cannot read table ({exc})") from exc


def table_attrs(field: Field, name: str) -> dict | None:
    """The ``attrs`` stored with ``tables/<name>.parquet`` (its provenance), read from the
    Parquet footer without the rows; ``None`` when the table does not exist.

    Raises
    ------
    StoreError
        If the table exists but its footer cannot be read.
    """
    import json

    import pyarrow.parquet as pq

    fs, path = _fs_path(field, name)
    fs.invalidate_cache(path.rsplit("/", 1)[0])
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "rb") as fh:
            meta = pq.read_schema(fh).metadata or {}
        return json.loads(meta[b"PANDAS_ATTRS"]) if b"PANDAS_ATTRS" in meta else {}
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
        raise StoreError(f"{field.table_url(name)}: cannot read table ({exc})") from exc


def list_tables(field: Field) -> list[str]:
    """Names of the tables of ``field``."""
    fs, path = _fs_path(field, "x")
    folder = path.rsplit("/", 1)[0]
    fs.invalidate_cache(folder)
    if not fs.exists(folder):
        return []
    return sorted(p.rsplit("/", 1)[1][: -len(".parquet")] for p in fs.ls(folder, detail=False) if p.endswith(".parquet"))


def part_name(name: str, t: int) -> str:
    """The name of time point ``t``'s part of the table ``name``: ``<name>.parts/t000012``.

    Workers write one part per volume (atomically, so a part that exists is complete); the
    stage combines a field's parts into ``tables/<name>.parquet`` once every volume is done.
    """
    return f"{name}.parts/t{int(t):06d}"


def parts_folder(field: Field, name: str) -> tuple:
    """``(filesystem, path)`` of the folder holding the parts of the table ``name``."""
    fs, path = _fs_path(field, f"{name}.parts/x")
    return fs, path.rsplit("/", 1)[0]


def done_parts(field: Field, name: str) -> set[int]:
    """Time points whose part of the table ``name`` exists."""
    fs, folder = parts_folder(field, name)
    fs.invalidate_cache(folder)  # written by the workers: an object store's cached listing is stale
    if not fs.exists(folder):
        return set()
    names = [p.rsplit("/", 1)[1] for p in fs.ls(folder, detail=False)]
    return {int(n[1:-8]) for n in names if n.startswith("t") and n.endswith(".parquet") and n[1:-8].isdigit()}


def read_parts(field: Field, name: str) -> pd.DataFrame:
    """Every part of the table ``name``, in time order (an empty frame when there is none)."""
    frames = [read_table(field, part_name(name, t)) for t in sorted(done_parts(field, name))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def drop_parts(field: Field, name: str) -> None:
    """Remove the parts of the table ``name`` (a recomputation starts from none)."""
    fs, folder = parts_folder(field, name)
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
