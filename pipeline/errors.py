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


STORAGE_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3", "requests")
"""Top-level packages whose exceptions mean "the storage cannot be reached or refused the request"."""


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the storage layer (a file system or an object store).

    Includes ``OSError`` (a missing or unwritable file, a full disk, a lost network
    mount), the errors of the S3 client stack (botocore, aiohttp) and timeouts.
    """
    import asyncio

    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return True
    return any(cls.__module__.split(".")[0] in STORAGE_MODULES for cls in type(exc).__mro__)


def describe_storage_error(exc: BaseException) -> str:
    """One line for a storage error: the file or URL when the error names one, and the problem.

    Examples
    --------
    >>> describe_storage_error(OSError(28, "No space left on device", "/data/s.zarr/B/1/0/0/c/0/0/0/0/0"))
    '/data/s.zarr/B/1/0/0/c/0/0/0/0/0: No space left on device (disk full)'
    """
    import errno

    if isinstance(exc, OSError) and exc.strerror:
        hint = {
            errno.ENOSPC: " (disk full)",
            errno.EDQUOT: " (disk quota exceeded)",
            errno.EROFS: " (read-only file system)",
            errno.EACCES: " (no permission)",
        }.get(exc.errno or -1, "")
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}{hint}"
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else name
    if isinstance(exc, PermissionError):  # s3fs: a 403 (AccessDenied, Forbidden) without errno
        return f"permission denied by the storage ({text}): the credentials in use may not do this here"
    code = getattr(exc, "response", None)
    if isinstance(code, dict) and code.get("Error"):  # botocore ClientError: AccessDenied, NoSuchBucket...
        err = code["Error"]
        return f"{err.get('Code', name)}: {err.get('Message', text)}"
    if name == "NoCredentialsError":
        return "no credentials for the object store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or key/secret storage options)"
    if name == "EndpointConnectionError":
        return f"cannot reach the object store: {text}"
    if name in ("TimeoutError", "ReadTimeoutError", "ConnectTimeoutError", "ServerTimeoutError"):
        return f"the storage timed out ({text})"
    return f"{name}: {text}"


def as_user_error(exc: BaseException, where: str = "") -> SpheroidError | None:
    """The :class:`SpheroidError` to report for ``exc``, or ``None`` when it is a bug to show in full.

    A :class:`SpheroidError` is returned as is; storage errors become a :class:`StoreError`
    naming ``where`` (a store URL) when the error itself names no file.
    """
    if isinstance(exc, SpheroidError):
        return exc
    if is_storage_error(exc):
        message = describe_storage_error(exc)
        if where and not (isinstance(exc, OSError) and exc.filename):
            message = f"{where}: {message}"
        return StoreError(message)
    return None
