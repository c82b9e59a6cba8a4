"""Exceptions that the command line turns into one clear error line.

Every error a user can cause (bad input files, bad configuration, unreachable
storage) is raised as a :class:`SpheroidError` subclass whose message names the
file or key and the problem. The CLI prints ``error: <message>`` and exits
non-zero; a traceback is shown only with ``-v``.
"""


class SpheroidError(Exception):
    """Base class of all errors meant for the user."""


class ConfigError(SpheroidError):
    """A configuration file or value is invalid."""


class InputError(SpheroidError):
    """An input file is unreadable, truncated or inconsistent."""


class StoreError(SpheroidError):
    """The OME-Zarr store is missing, incomplete, unreachable or would be overwritten."""


class MissingDependencyError(SpheroidError):
    """An optional dependency (an extra) is not installed."""


def require(module: str, extra: str):
    """Import an optional module or raise a :class:`MissingDependencyError`.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"stardist.models"``.
    extra : str
        Name of the ``spheroid`` extra that provides it, e.g. ``"stardist"``.

    Returns
    -------
    module
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed ({exc}); install it with: pip install 'spheroid[{extra}]'"
        ) from exc
