"""Training sets: a folder of image / instance / semantic-target triplets and a manifest.

This is the contract between ground-truth preparation (which writes sets) and the
training job (which reads them only through :class:`TrainingSet`)::

    trainset/
      manifest.json      {"version": 1, "items": [ITEM, ...]}
      images/<id>.tif    ZYX image the model sees (uint16/uint8 raw or float32 preprocessed)
      instances/<id>.tif ZYX uint32 cleaned instance labels (0 = background)
      semantic/<id>.tif  ZYX uint8 target: 0 background, 1 edge, 2 nucleus

``ITEM`` holds ``id``, the three relative paths, ``voxel_size`` ``[z, y, x]`` in
micrometres, ``channel``, ``source`` (``synthetic``, ``cellpose``,
``hand-corrected`` or ``real:<dataset>``), ``split`` (``train``, ``val``, ``test``),
free-form ``provenance``, and ``stats`` (shape, number of instances, class balance, and the
median nucleus' diameter, as a sphere and per axis).

Every write is atomic: TIFFs are written under a temporary name and renamed, the
manifest is rewritten to a temporary file and renamed, under an exclusive lock so
that two processes adding items to one set do not lose each other's entries. Files
are written before the manifest names them, so an interrupted ``add`` leaves at most
unreferenced files, never an item that points at missing data.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.errors import InputError
from pipeline.groundtruth.sizes import nucleus_sizes, typical_diameters
from pipeline.groundtruth.manifest import MANIFEST, VERSION, jsonable, read_manifest, write_json_atomic
from pipeline.groundtruth.tiffio import read_tiff, write_tiff

LOG = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CLASSES = ("background", "edge", "nucleus")
IMAGE_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SOURCE = re.compile(r"^(synthetic|cellpose|hand-corrected|real:[A-Za-z0-9._/-]+)$")


def class_balance(semantic: np.ndarray) -> dict[str, float]:
    """Fractions of background, edge and nucleus voxels in a semantic target (they sum to 1).

    Examples
    --------
    >>> class_balance(np.array([0, 0, 1, 2], np.uint8))
    {'background': 0.5, 'edge': 0.25, 'nucleus': 0.25}
    """
    counts = np.bincount(np.asarray(semantic, dtype=np.uint8).ravel(), minlength=len(CLASSES))[: len(CLASSES)]
    total = max(int(semantic.size), 1)
    return {name: float(c) / total for name, c in zip(CLASSES, counts)}


def format_balance(balance: dict[str, float]) -> str:
    """``"background 93.0% / edge 1.0% / nucleus 6.0%"``."""
    return " / ".join(f"{name} {100 * balance.get(name, 0.0):.1f}%" for name in CLASSES)


class TrainingSet:
    """A training-set folder; create with :meth:`create`, open with :meth:`open`.

    Examples
    --------
    >>> ts = TrainingSet.create(tmp / "ts")                       # doctest: +SKIP
    >>> ts.add(img, inst, sem, id="a", voxel_size=(5, 1.24, 1.24),
    ...        channel="Hoechst", source="synthetic", split="train")  # doctest: +SKIP
    >>> for item in ts.items("train"):                            # doctest: +SKIP
    ...     image, instances, semantic = ts.load(item)
    """

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self._manifest = manifest

    # -- opening ------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, exist_ok: bool = False) -> "TrainingSet":
        """Create an empty training set at ``path`` (its parent must exist).

        Parameters
        ----------
        path : str or Path
            The set's folder.
        exist_ok : bool
            Open an existing set instead of failing.

        Raises
        ------
        InputError
            If a set already exists there (and ``exist_ok`` is false), or the folder
            exists and holds other files.
        """
        root = Path(path)
        if (root / MANIFEST).exists():
            if exist_ok:
                return cls.open(root)
            raise InputError(f"{root}: a training set already exists here")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise InputError(f"{root}: exists and is not an empty folder; choose a new training-set path")
        if not root.parent.is_dir():
            raise InputError(f"{root.parent}: no such folder for the training set")
        for sub in ("images", "instances", "semantic"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        manifest = {"version": VERSION, "items": []}
        write_json_atomic(root / MANIFEST, manifest)
        LOG.info("created training set %s", root)
        return cls(root, manifest)

    @classmethod
    def open(cls, path: str | Path) -> "TrainingSet":
        """Open an existing training set.

        Raises
        ------
        InputError
            If there is no manifest, it is not valid JSON, or its version is unknown.
        """
        root = Path(path)
        return cls(root, read_manifest(root / MANIFEST))

    @classmethod
    def resolve(cls, trainset: "TrainingSet | str | Path") -> "TrainingSet":
        """An open set as it is; a path is opened, or created when nothing is there yet."""
        return trainset if isinstance(trainset, TrainingSet) else cls.create(trainset, exist_ok=True)

    def reload(self) -> None:
        """Re-read the manifest (to see items other processes added)."""
        self._manifest = read_manifest(self.root / MANIFEST)

    # -- reading -------------------------------------------------------------------
    def items(self, split: str | None = None) -> list[dict[str, Any]]:
        """Items in manifest order, all of them or those of one ``split``."""
        if split is not None and split not in SPLITS:
            raise InputError(f"{self.root}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        return [dict(item) for item in self._manifest["items"] if split is None or item["split"] == split]

    def ids(self) -> list[str]:
        return [item["id"] for item in self._manifest["items"]]

    def __len__(self) -> int:
        return len(self._manifest["items"])

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.ids()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.items())

    def get(self, item_id: str) -> dict[str, Any]:
        """The item with id ``item_id``."""
        for item in self._manifest["items"]:
            if item["id"] == item_id:
                return dict(item)
        raise InputError(f"{self.root}: no item {item_id!r}")

    def load(self, item: dict[str, Any] | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read an item's ``(image, instances, semantic)`` arrays.

        Parameters
        ----------
        item : dict or str
            An entry of :meth:`items` or an item id.

        Raises
        ------
        InputError
            If a file is missing or unreadable, or the three shapes differ.
        """
        if isinstance(item, str):
            item = self.get(item)
        image, _ = read_tiff(self.root / item["image"], min_ndim=3)
        instances, _ = read_tiff(self.root / item["instances"], min_ndim=3)
        semantic, _ = read_tiff(self.root / item["semantic"], min_ndim=3)
        if not image.shape == instances.shape == semantic.shape:
            raise InputError(
                f"{self.root}: item {item['id']!r} has mismatched shapes: image {image.shape}, "
                f"instances {instances.shape}, semantic {semantic.shape}"
            )
        return image, instances.astype(np.uint32, copy=False), semantic.astype(np.uint8, copy=False)

    def summary(self) -> dict[str, Any]:
        """Counts per split and source, voxels and mean class balance (voxel-weighted)."""
        out: dict[str, Any] = {"path": str(self.root), "items": len(self), "splits": {}, "sources": {}, "voxels": 0}
        weighted = np.zeros(len(CLASSES))
        for item in self._manifest["items"]:
            out["splits"][item["split"]] = out["splits"].get(item["split"], 0) + 1
            out["sources"][item["source"]] = out["sources"].get(item["source"], 0) + 1
            stats = item.get("stats", {})
            n = int(np.prod(stats.get("shape", [0])))
            out["voxels"] += n
            weighted += n * np.array([stats.get("class_balance", {}).get(c, 0.0) for c in CLASSES])
        if out["voxels"]:
            out["class_balance"] = {c: float(v) for c, v in zip(CLASSES, weighted / out["voxels"])}
        return out

    # -- writing -------------------------------------------------------------------
    def add(
        self,
        image: np.ndarray,
        instances: np.ndarray,
        semantic: np.ndarray,
        *,
        id: str,
        voxel_size,
        channel: str,
        source: str,
        split: str = "train",
        provenance: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Validate and store one item, then record it in the manifest.

        Parameters
        ----------
        image : numpy.ndarray
            ZYX image, uint8/uint16 raw or float32 preprocessed (other floats are cast to float32).
        instances : numpy.ndarray
            ZYX non-negative integer instance labels; stored as uint32.
        semantic : numpy.ndarray
            ZYX target with values 0 (background), 1 (edge), 2 (nucleus); stored as uint8.
            Every nucleus voxel must lie in an instance, and every instance voxel must be
            edge or nucleus.
        id : str
            Unique item id (letters, digits, ``._-``); also the file name.
        voxel_size : sequence of 3 floats
            ``(z, y, x)`` in micrometres of the stored arrays.
        channel : str
            Channel the image shows, e.g. ``"Hoechst"``.
        source : str
            ``"synthetic"``, ``"cellpose"``, ``"hand-corrected"`` or ``"real:<dataset>"``.
        split : str
            ``"train"``, ``"val"`` or ``"test"``.
        provenance : dict, optional
            Free-form JSON-compatible record (origin file, tool, date, corrected_from...).
        replace : bool
            Replace an existing item with the same id instead of failing.

        Returns
        -------
        dict
            The manifest entry.

        Raises
        ------
        InputError
            On any invalid argument or array; nothing is written then.
        """
        image, instances, semantic = self._validate(image, instances, semantic, id, split, source, channel)
        voxel = _check_voxel_size(voxel_size, f"{self.root}: item {id!r}")
        with self._lock():
            self.reload()
            if id in self and not replace:
                raise InputError(f"{self.root}: item {id!r} already exists (pass replace=True / --replace to overwrite it)")
            entry = {
                "id": id,
                "image": f"images/{id}.tif",
                "instances": f"instances/{id}.tif",
                "semantic": f"semantic/{id}.tif",
                "voxel_size": list(voxel),
                "channel": channel,
                "source": source,
                "split": split,
                "provenance": jsonable(provenance or {}),
                "stats": {
                    "shape": list(image.shape),
                    "image_dtype": str(image.dtype),
                    "n_instances": int(np.count_nonzero(np.unique(instances))),
                    "class_balance": class_balance(semantic),
                    **_size_stats(instances, voxel),
                },
            }
            write_tiff(self.root / entry["image"], image, voxel)
            write_tiff(self.root / entry["instances"], instances, voxel)
            write_tiff(self.root / entry["semantic"], semantic, voxel)
            items = [it for it in self._manifest["items"] if it["id"] != id]
            items.append(entry)
            manifest = {"version": VERSION, "items": items}
            write_json_atomic(self.root / MANIFEST, manifest)
            self._manifest = manifest
        LOG.info("added %s (%s, %s) to %s: %s instances", id, source, split, self.root, entry["stats"]["n_instances"])
        return dict(entry)

    def remove(self, item_id: str) -> None:
        """Drop an item from the manifest and delete its files."""
        with self._lock():
            self.reload()
            item = self.get(item_id)
            manifest = {"version": VERSION, "items": [it for it in self._manifest["items"] if it["id"] != item_id]}
            write_json_atomic(self.root / MANIFEST, manifest)
            self._manifest = manifest
        for key in ("image", "instances", "semantic"):
            with contextlib.suppress(FileNotFoundError):
                (self.root / item[key]).unlink()

    def _validate(self, image, instances, semantic, item_id, split, source, channel):
        where = f"{self.root}: item {item_id!r}"
        if not isinstance(item_id, str) or not _ID.match(item_id):
            raise InputError(f"{self.root}: item id {item_id!r} must be 1-128 letters, digits, '.', '_' or '-'")
        if split not in SPLITS:
            raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        if not isinstance(source, str) or not _SOURCE.match(source):
            raise InputError(f"{where}: source {source!r} must be synthetic, cellpose, hand-corrected or real:<dataset>")
        if not isinstance(channel, str) or not channel:
            raise InputError(f"{where}: channel must be a non-empty name")
        image, instances, semantic = np.asarray(image), np.asarray(instances), np.asarray(semantic)
        if image.ndim != 3:
            raise InputError(f"{where}: image must be ZYX (3 axes), got shape {image.shape}")
        if not image.shape == instances.shape == semantic.shape:
            raise InputError(f"{where}: shapes differ: image {image.shape}, instances {instances.shape}, semantic {semantic.shape}")
        if image.dtype not in IMAGE_DTYPES:
            if np.issubdtype(image.dtype, np.floating):
                image = image.astype(np.float32)
            else:
                raise InputError(f"{where}: image dtype {image.dtype} not supported (uint8, uint16 or float32)")
        if not np.issubdtype(instances.dtype, np.integer):
            raise InputError(f"{where}: instances must be integer labels, got {instances.dtype}")
        if instances.size and instances.min() < 0:
            raise InputError(f"{where}: instances contain negative labels")
        if instances.size and int(instances.max()) > np.iinfo(np.uint32).max:
            raise InputError(f"{where}: instance labels exceed the uint32 range")
        if not np.issubdtype(semantic.dtype, np.integer) or (semantic.size and (semantic.min() < 0 or semantic.max() > 2)):
            raise InputError(f"{where}: semantic target must hold only 0 (background), 1 (edge), 2 (nucleus)")
        instances = instances.astype(np.uint32, copy=False)
        semantic = semantic.astype(np.uint8, copy=False)
        if np.any((semantic == 2) & (instances == 0)):
            raise InputError(f"{where}: nucleus voxels of the semantic target lie outside every instance")
        if np.any((semantic == 0) & (instances > 0)):
            raise InputError(f"{where}: instance voxels are marked background in the semantic target")
        return image, instances, semantic

    @contextlib.contextmanager
    def _lock(self):
        """Exclusive lock on the manifest for read-modify-write (POSIX ``flock``)."""
        import fcntl

        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __repr__(self) -> str:
        return f"TrainingSet({str(self.root)!r}, items={len(self)})"


def _check_voxel_size(voxel_size, where: str) -> tuple[float, float, float]:
    try:
        voxel = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise InputError(f"{where}: voxel_size must be three numbers (z, y, x) in um, got {voxel_size!r}") from None
    if len(voxel) != 3 or not all(np.isfinite(v) and v > 0 for v in voxel):
        raise InputError(f"{where}: voxel_size must be three positive numbers (z, y, x) in um, got {voxel_size!r}")
    return voxel


def _size_stats(instances: np.ndarray, voxel_size: Sequence[float]) -> dict[str, Any]:
    """The item's median nucleus (:func:`pipeline.groundtruth.sizes.typical_diameters`), where it has one."""
    found = typical_diameters([nucleus_sizes(instances, voxel_size)])
    return {"nucleus_diameter_um": found[0], "nucleus_diameters_um": found[1]} if found else {}
