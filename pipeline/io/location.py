"""Store locations as fsspec URLs: a local path, ``file://``, ``memory://`` or ``s3://``."""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import zarr

from pipeline.errors import StoreError, as_user_error, require

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


_OPENED: OrderedDict[tuple, tuple[bytes, Any]] = OrderedDict()
"""Arrays and groups of local stores opened by this process, with the metadata document
they were opened from (see :meth:`Location._cached`)."""
_OPENED_MAX = 64
_OPENED_LOCK = threading.Lock()
STORES_OPENED: dict[str, "Location"] = {}
"""Every store this process opened a group of, by URL: where :func:`find_damaged_metadata`
looks when an unexpected error ends a command."""


SECRET_KEYS = re.compile(r"secret|password|passwd|token|credential|session|access_key|(^|_)key$|^key", re.IGNORECASE)
"""Names of storage options whose values are never shown (``key``, ``secret``, ``token``,
``aws_secret_access_key``, ``session_token``...)."""


def redacted(options: Any) -> Any:
    """``options`` with the values of credential-like keys replaced by ``"***"`` (nested dicts too).

    >>> redacted({"key": "AKIA...", "secret": "s3cr3t", "client_kwargs": {"endpoint_url": "http://h:9000"}})
    {'key': '***', 'secret': '***', 'client_kwargs': {'endpoint_url': 'http://h:9000'}}
    """
    if isinstance(options, dict):
        return {k: "***" if SECRET_KEYS.search(str(k)) and not isinstance(v, dict) else redacted(v) for k, v in options.items()}
    return options


class DamagedMetadata(StoreError):
    """A node's ``zarr.json`` is empty, truncated or not the metadata zarr expects."""


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
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        url = str(self.url).rstrip("/")
        if url.startswith("file://"):
            url = url[len("file://") :]
        object.__setattr__(self, "url", url)
        if url_scheme(url) == "s3":
            require("s3fs", "s3")

    def __repr__(self) -> str:
        # Dask logs a failed task's arguments ("Compute Failed ... kwargs: {'location': ...}"), and
        # storage options may hold credentials: only their names are shown.
        return f"Location(url={self.url!r}, storage_options={redacted(self.storage_options)!r})"

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
        STORES_OPENED.setdefault(self.url, self)
        try:
            return zarr.open_group(store=self.url, path=path or None, mode=mode, storage_options=self._options(), zarr_format=3)
        except FileNotFoundError as exc:
            if mode != "r" and mode != "r+":
                reason = exc.strerror or "a folder on the way cannot be created"
                raise StoreError(f"{self.child(path) if path else self.url}: cannot create the store here ({reason})") from exc
            raise StoreError(f"{self.child(path) if path else self.url}: no such store or group") from exc
        except zarr.errors.GroupNotFoundError as exc:
            raise StoreError(f"{self.child(path) if path else self.url}: no such store or group") from exc
        except (zarr.errors.ContainsArrayError, zarr.errors.NodeTypeValidationError) as exc:
            raise StoreError(f"{self.child(path) if path else self.url}: is an array, not a store or group (give the store's root folder)") from exc
        except Exception as exc:
            raise self._storage_error(exc, path) from exc

    def open_array(self, path: str, mode: str = "r") -> zarr.Array:
        """Open the array at ``path`` below the root."""
        return self._cached("array", path, mode, lambda: self._open_array(path, mode))

    def _open_array(self, path: str, mode: str) -> zarr.Array:
        try:
            return zarr.open_array(store=self.url, path=path, mode=mode, storage_options=self._options(), zarr_format=3)
        except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
            raise StoreError(f"{self.child(path)}: no such array") from exc
        except Exception as exc:
            raise self._storage_error(exc, path) from exc

    def exists(self) -> bool:
        """Whether a zarr group already exists at the root."""
        try:
            zarr.open_group(store=self.url, mode="r", storage_options=self._options(), zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            return False
        except Exception as exc:
            err = self._storage_error(exc, "")
            if isinstance(err, DamagedMetadata):
                return True  # something is there: replaced only with --overwrite
            raise err from exc
        return True

    def _storage_error(self, exc: Exception, path: str) -> Exception:
        """A one-line :class:`StoreError` for what went wrong opening ``path``: storage
        errors (unreachable endpoint, denied access, credentials) and damaged metadata
        (a ``zarr.json`` that is empty or not JSON); anything else is returned as is."""
        where = self.child(path) if path else self.url
        err = as_user_error(exc, self.url)
        if err is not None:
            return err
        if isinstance(exc, (ValueError, TypeError, KeyError)):
            return DamagedMetadata(f"{where}/zarr.json: damaged store metadata ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'})")
        return exc


def find_damaged_metadata(location: Location, max_nodes: int = 100_000) -> str | None:
    """The first ``zarr.json`` of a local store that is not a JSON object, as a one-line message.

    Zarr reads node metadata lazily, wherever a group is listed or an attribute read, and
    a damaged document surfaces as a bare ``JSONDecodeError`` that names no file. The
    command line calls this when an unexpected error ends a command, to name the file.
    Chunk folders (``c/``) are not walked. Remote stores are not scanned (``None``).
    """
    import json

    if location.scheme != "file" or not os.path.isdir(location.url):
        return None
    seen = 0
    for folder, dirs, files in os.walk(location.url):
        dirs[:] = sorted(d for d in dirs if d != "c")
        if "zarr.json" not in files:
            continue
        seen += 1
        if seen > max_nodes:
            return None
        path = os.path.join(folder, "zarr.json")
        try:
            with open(path, "rb") as fh:
                text = fh.read()
            if not text.strip():
                return f"{path}: damaged store metadata (empty file)"
            doc = json.loads(text)
        except (OSError, ValueError) as exc:
            return f"{path}: damaged store metadata ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        if not isinstance(doc, dict) or doc.get("node_type") not in ("group", "array"):
            return f"{path}: damaged store metadata (not a zarr v3 node document)"
    return None
