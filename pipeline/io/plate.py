"""The experiment store: one OME-Zarr HCS plate per experiment.

Layout (NGFF 0.5, zarr v3)::

    plate.zarr/                       plate metadata; provenance under attrs["spheroid"]
      B/10/                           well (row B, column 10)
        0/                            field 0: the raw image, axes t, c, z, y, x
          0                           the array, chunks (1, 1, Z, cy, cx), Blosc-zstd
          done                        (T, C) uint8: 1 where a volume is written and verified
          preprocessed/0, /done       derived images: same axes and chunks
          labels/nuclei/0, /done      NGFF label images (c = 1)
          tables/nuclei.parquet       per-nucleus tables (cellcycle's; segment's: nuclei-objects.parquet)

A stage marks a ``(t, c)`` volume in ``done`` only after its chunks are written
and read back; a later stage trusts only volumes marked done, and an image's
``attrs["spheroid"]["complete"]`` is set only once every volume is done. That is
what makes interrupted runs resumable and never mistaken for finished ones.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterator, Sequence

import zarr

from pipeline.errors import InputError, StoreError
from pipeline.io import ngff
from pipeline.io.field import DEFAULT_LEVEL, RAW, RESERVED, Field, chunk_codecs, compressor
from pipeline.io.location import Location

__all__ = ["DEFAULT_LEVEL", "RAW", "RESERVED", "Field", "Plate", "chunk_codecs", "compressor", "iter_volumes", "parse_field", "parse_well"]

LOG = logging.getLogger(__name__)

_WELL = re.compile(r"^([A-Za-z]{1,2})[/_-]?0*([0-9]{1,3})$")


def parse_well(well: str) -> tuple[str, str]:
    """Split a well name into NGFF row and column: ``"B10"``, ``"B/10"`` or ``"b010"`` -> ``("B", "10")``.

    Raises
    ------
    StoreError
        If the name is not a row letter followed by a column number.
    """
    match = _WELL.match(str(well).strip())
    if not match:
        raise StoreError(f"well name {well!r}: expected a row letter and a column number, like 'B10'")
    return match.group(1).upper(), str(int(match.group(2)))


def parse_field(spec: str) -> tuple[str, int]:
    """A field given as ``WELL/INDEX``: ``"B10/0"``, ``"B/10/0"`` or ``"B10"`` -> ``("B10", 0)``.

    Raises
    ------
    InputError
        If ``spec`` is not a well name with an optional field index.
    """
    match = re.match(r"^\s*([A-Za-z]{1,2}[/_-]?\d{1,3})(?:/(\d+))?\s*$", str(spec))
    if not match:
        raise InputError(f"field {spec!r}: expected WELL/INDEX, like 'B10/0'")
    return match.group(1), int(match.group(2) or 0)


class Plate:
    """An OME-Zarr HCS plate: wells of fields, each field a ``t, c, z, y, x`` image.

    Use :meth:`create` or :meth:`open`; both take a local path or an fsspec URL.
    """

    def __init__(self, location: Location, group: zarr.Group):
        self.location = location
        self.group = group

    # -- opening -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        url: str,
        *,
        name: str = "plate",
        storage_options: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> "Plate":
        """Create an empty plate store.

        Raises
        ------
        StoreError
            If a store exists at ``url`` and ``overwrite`` is false.
        """
        location = Location(url, storage_options or {})
        if location.exists():
            if not overwrite:
                raise StoreError(f"{location.url}: store exists; pass --overwrite to replace it")
            LOG.warning("overwriting existing store %s", location.url)
        group = location.open_group(mode="w")
        ngff.write_plate(group, name=name, wells=[], field_count=0)
        group.attrs["spheroid"] = {"name": name}
        return cls(location, group)

    @classmethod
    def open(cls, url: str, *, mode: str = "r", storage_options: dict[str, Any] | None = None) -> "Plate":
        """Open an existing plate store (``mode`` ``"r"`` or ``"r+"``).

        Raises
        ------
        StoreError
            If there is no store, or it is not a plate.
        """
        location = Location(url, storage_options or {})
        group = location.open_group(mode=mode)
        ome = group.attrs.get("ome", {})
        if not isinstance(ome, dict) or "plate" not in ome:
            raise StoreError(f"{location.url}: not an OME-Zarr plate (no 'ome.plate' metadata)")
        plate = cls(location, group)
        plate.wells()  # malformed plate metadata: one line now, not a traceback later
        return plate

    @property
    def name(self) -> str:
        return self.group.attrs["ome"]["plate"].get("name", "plate")

    # -- wells and fields -----------------------------------------------------------
    def wells(self) -> list[tuple[str, str]]:
        """``(row, column)`` of every well, in plate order.

        Raises
        ------
        StoreError
            If the plate metadata is malformed (naming the store's ``zarr.json``).
        """
        try:
            wells = [tuple(w["path"].split("/")) for w in self.group.attrs["ome"]["plate"]["wells"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"{self.location.child('zarr.json')}: malformed plate metadata (ome.plate.wells: {type(exc).__name__}: {exc})") from exc
        if any(len(w) != 2 for w in wells):
            raise StoreError(f"{self.location.child('zarr.json')}: malformed plate metadata (a well path is not ROW/COLUMN)")
        return wells

    def fields(self) -> list["Field"]:
        """Every field of every well, in plate order.

        Raises
        ------
        StoreError
            If a well is missing or its metadata is malformed.
        """
        out = []
        for row, col in self.wells():
            if f"{row}/{col}" not in self.group:
                raise StoreError(f"{self.location.child(f'{row}/{col}')}: the plate lists well {row}{col} but the store has no such group")
            well = self.group[f"{row}/{col}"]
            try:
                indices = [int(image["path"]) for image in well.attrs["ome"]["well"]["images"]]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise StoreError(f"{self.location.child(f'{row}/{col}/zarr.json')}: malformed well metadata (ome.well.images: {type(exc).__name__}: {exc})") from exc
            for index in indices:
                if f"{row}/{col}/{index}" not in self.group:
                    raise StoreError(f"{self.location.child(f'{row}/{col}/{index}')}: well {row}{col} lists field {index} but the store has no such group (zarr.json missing)")
                out.append(Field(self, row, col, index))
        return out

    def field(self, well: str, index: int = 0) -> "Field":
        """An existing field, e.g. ``plate.field("B10", 0)``."""
        row, col = parse_well(well)
        for f in self.fields():
            if (f.row, f.column, f.index) == (row, col, int(index)):
                return f
        raise StoreError(f"{self.location.url}: no field {row}{col}/{index} (have: {', '.join(map(str, self.fields())) or 'none'})")

    def select(self, fields: "Sequence[str] | None" = None) -> list["Field"]:
        """The fields named in ``fields`` (``"B10/0"``...), or every field of the plate.

        Raises
        ------
        StoreError
            If a named field does not exist, or the plate has none.
        """
        if fields:
            return [self.field(*parse_field(f)) for f in fields]
        found = self.fields()
        if not found:
            raise StoreError(f"{self.location.url}: the plate has no fields; run `spheroid convert` first")
        return found

    def add_field(self, well: str, index: int = 0) -> "Field":
        """Create (or return) field ``index`` of ``well``, updating plate and well metadata."""
        row, col = parse_well(well)
        wells = self.wells()
        well_group = self.group.require_group(f"{row}/{col}")
        fields = [int(i["path"]) for i in well_group.attrs.get("ome", {}).get("well", {}).get("images", [])]
        if int(index) not in fields:
            fields.append(int(index))
            well_group.require_group(str(int(index)))
            ngff.write_well(well_group, fields)
        plate_meta = self.group.attrs["ome"]["plate"]
        if (row, col) not in wells or len(fields) > plate_meta.get("field_count", 0):
            wells = wells if (row, col) in wells else [*wells, (row, col)]
            ngff.write_plate(self.group, name=self.name, wells=wells, field_count=max(plate_meta.get("field_count", 0), len(fields)))
        return Field(self, row, col, int(index))

    # -- provenance -----------------------------------------------------------------
    def record(self, stage: str, info: dict[str, Any]) -> None:
        """Store a stage's provenance record under ``attrs["spheroid"]["stages"][stage]``."""
        attrs = dict(self.group.attrs.get("spheroid", {}))
        stages = dict(attrs.get("stages", {}))
        stages[stage] = info
        attrs["stages"] = stages
        self.group.attrs["spheroid"] = attrs

    def records(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("spheroid", {}).get("stages", {}))

    def __repr__(self) -> str:
        return f"Plate({self.location.url!r}, fields={len(self.fields())})"


def iter_volumes(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """All ``(t, c)`` pairs of a ``t, c, z, y, x`` shape."""
    for t in range(shape[0]):
        for c in range(shape[1]):
            yield t, c
