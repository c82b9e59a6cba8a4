"""spheroid: FUCCI spheroid time-lapses to per-nucleus cell-cycle read-outs.

The package is laid out as the pipeline runs: ``io`` (readers and the OME-Zarr
store), ``convert``, ``preprocess``, ``groundtruth``, ``train``, ``segment``,
``evaluate``, ``cellcycle`` and ``report``; ``cli`` holds the thin click
commands, ``config`` the pydantic models and ``cluster`` the Dask cluster.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spheroid")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
