"""Store locations as fsspec URLs: a local path, ``file://``, ``memory://`` or ``s3://``."""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import zarr

from pipeline.errors import StoreError, require

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


_OPENED: OrderedDict[tuple, tuple[bytes, Any]] = OrderedDict()
"""Arrays and groups of local stores opened by this process, with the metadata document
they were opened from (see :meth:`Location._cached`)."""
_OPENED_MAX = 64
_OPENED_LOCK = threading.Lock()


def url_scheme(url: str) -> str:
    """``"file"`` for a plain path, else the URL's scheme (``"s3"``, ``"memory"``...)."""
    match = _SCHEME.match(str(url))
    return match.group(1).lower() if match else "file"


@dataclass(frozen=True)
class Location:
    """A picklable handle on a store: what Dask workers receive to open it themselves.

    Parameters
    ----------
    url : str
        Local path or fsspec URL of the store root.
    storage_options : dict
        Passed to fsspec (credentials, ``endpoint_url`` for S3-compatible servers...).
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = str(self.url).rstrip("/")
        if url.startswith("file://"):
            url = url[len("file://") :]
        object.__setattr__(self, "url", url)
        if url_scheme(url) == "s3":
            require("s3fs", "s3")

    @property
    def scheme(self) -> str:
        return url_scheme(self.url)

    @property
    def in_memory(self) -> bool:
        """True for ``memory://`` stores, which only this process can see."""
        return self.scheme == "memory"

    def _options(self) -> dict[str, Any] | None:
        if self.scheme == "file":
            return None
        return dict(self.storage_options) or None

    def child(self, path: str) -> str:
        """URL of a key below the store root."""
        return f"{self.url}/{path.strip('/')}"

    def filesystem(self):
        """The fsspec filesystem and the root path inside it."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url, **(self.storage_options if self.scheme != "file" else {}))
        return fs, root

    def _cached(self, kind: str, path: str, mode: str, opener):
        """``opener()``, or the object it gave before for the same metadata document.

        Opening a zarr node parses its ``zarr.json`` and builds the codec pipeline: about a
        millisecond, several times per volume a worker writes. For a local store in mode
        ``"r"`` or ``"r+"`` the object is kept per process and handed out again while the
        node's ``zarr.json`` holds the same bytes (a recreated or updated node is opened
        afresh); other stores and modes always open.
        """
        if self.scheme != "file" or mode not in ("r", "r+"):
            return opener()
        doc = os.path.abspath(os.path.join(self.url, path.strip("/"), "zarr.json"))  # a relative URL moves with the cwd
        try:
            with open(doc, "rb") as fh:
                meta = fh.read()
        except OSError:
            return opener()  # let zarr report what is missing
        key = (os.getpid(), kind, doc, mode)
        with _OPENED_LOCK:
            hit = _OPENED.get(key)
            if hit is not None and hit[0] == meta:
                _OPENED.move_to_end(key)
                return hit[1]
        node = opener()
        with _OPENED_LOCK:
            _OPENED[key] = (meta, node)
            while len(_OPENED) > _OPENED_MAX:
                _OPENED.popitem(last=False)
        return node

    def open_group(self, path: str = "", mode: str = "r") -> zarr.Group:
        """Open the group at ``path`` below the root."""
        return self._cached("group", path, mode, lambda: self._open_group(path, mode))

    def _open_group(self, path: str, mode: str) -> zarr.Group:
        try:
            return zarr.open_group(store=self.url, path=path or None, mode=mode, storage_options=self._options(), zarr_format=3)
        except FileNotFoundError as exc:
            raise StoreError(f"{self.child(path) if path else self.url}: no such store or group") from exc
        except zarr.errors.GroupNotFoundError as exc:
            raise StoreError(f"{self.child(path) if path else self.url}: no such store or group") from exc
        except OSError as exc:
            raise StoreError(f"{self.url}: cannot open store ({exc})") from exc

    def open_array(self, path: str, mode: str = "r") -> zarr.Array:
        """Open the array at ``path`` below the root."""
        return self._cached("array", path, mode, lambda: self._open_array(path, mode))

    def _open_array(self, path: str, mode: str) -> zarr.Array:
        try:
            return zarr.open_array(store=self.url, path=path, mode=mode, storage_options=self._options(), zarr_format=3)
        except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
            raise StoreError(f"{self.child(path)}: no such array") from exc
        except OSError as exc:
            raise StoreError(f"{self.url}: cannot open store ({exc})") from exc

    def exists(self) -> bool:
        """Whether a zarr group already exists at the root."""
        try:
            zarr.open_group(store=self.url, mode="r", storage_options=self._options(), zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            return False
        except OSError as exc:
            raise StoreError(f"{self.url}: cannot reach store ({exc})") from exc
        return True
