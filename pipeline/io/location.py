"""Store locations as fsspec URLs: a local path, ``file://``, ``memory://`` or ``s3://``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import zarr

from pipeline.errors import StoreError, require

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


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

    def open_group(self, path: str = "", mode: str = "r") -> zarr.Group:
        """Open the group at ``path`` below the root."""
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
