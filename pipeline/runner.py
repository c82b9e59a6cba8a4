"""Run many small tasks on a Dask cluster with a progress bar, keeping only small results."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable, Iterable, Sequence

from pipeline.progress import progress_bar

from pipeline.errors import as_user_error

LOG = logging.getLogger(__name__)


WORKER_LOG_LEVEL = "SPHEROID_WORKER_LOG_LEVEL"
"""Environment variable a local cluster's workers read their log level from (see
:func:`pipeline.cluster.worker_log_level`); unset elsewhere (SLURM workers keep their logs)."""
_quieted: list[int] = []


def quiet_worker_logs() -> None:
    """Once per worker process: Dask's worker loggers at the level the client asked for.

    A task's error reaches the client, which reports it in one line; the worker would
    also log it as a "Compute Failed" block with its traceback.
    """
    level = os.environ.get(WORKER_LOG_LEVEL)
    if not level or _quieted:
        return
    for name in ("distributed.worker", "distributed.worker.state_machine", "distributed.core"):
        logging.getLogger(name).setLevel(int(level))
    _quieted.append(int(level))


def call_task(func: Callable[..., Any], item: Any, /, **kwargs: Any) -> Any:
    """Worker side: ``func(item, **kwargs)``, with user errors made fit to cross to the client.

    Dask pickles a task's exception to send it to the client; one whose ``__cause__``
    chain holds an exception that does not unpickle (zarr's, botocore's) arrives as a
    bare ``Exception(repr)``, which the command line cannot report in one line. A
    :class:`~pipeline.errors.SpheroidError` is sent without its chain, and a storage
    error (a full disk, an unreachable endpoint) as a :class:`~pipeline.errors.StoreError`.
    Other exceptions are bugs and travel as they are, with their traceback.
    """
    quiet_worker_logs()
    try:
        return func(item, **kwargs)
    except Exception as exc:
        user_error = as_user_error(exc, getattr(kwargs.get("location"), "url", ""))
        if user_error is None:
            raise
    # raised outside the handler, so that no exception is chained to it
    user_error.__cause__ = user_error.__context__ = None
    user_error.__traceback__ = None
    raise user_error


def run_tasks(
    client,
    func: Callable[..., Any],
    items: Sequence[Any],
    *,
    desc: str,
    progress: bool = True,
    unit: str = "volume",
    on_result: Callable[[int, Any], None] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Submit ``func(item, **kwargs)`` for every item and gather the (small) results.

    Parameters
    ----------
    client : distributed.Client
        The cluster to run on.
    func : callable
        A module-level function; it should write its output itself and return
        only metadata.
    items : sequence
        One task per item.
    desc : str
        Progress-bar label.
    progress : bool
        Show a progress bar.
    on_result : callable, optional
        Called in this thread as ``on_result(index, result)`` as soon as each task's
        result arrives (e.g. to keep it on disk before the others finish).
    **kwargs
        Passed to every call (scattered once if large is not needed: keep them small).

    Returns
    -------
    list
        Results in the order of ``items``.

    Raises
    ------
    Exception
        The first task error, after the remaining tasks are cancelled; work that
        finished is kept (its outputs are already written and marked done).
    """
    from distributed import as_completed

    if not items:
        return []
    name = getattr(func, "__name__", "task")
    token = uuid.uuid4().hex
    items = list(items)
    futures = client.map(call_task, [func] * len(items), items, key=[f"{name}-{token}-{i}" for i in range(len(items))], **kwargs)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    bar = progress_bar(total=len(futures), desc=desc, unit=unit, disable=not progress, leave=False)
    try:
        # one result at a time, from this thread: as_completed(with_results=True) fetches them
        # concurrently on the event loop, and in a process with two clients that once tripped
        # an assertion in tornado's stream and left the iterator waiting forever. The iterator
        # is tied to this client's loop (by default it takes the default client's: with two
        # clients in a process, as in a notebook or the tests, dask/distributed#4357)
        for future in as_completed(futures, loop=client.loop):
            if future.status == "error":
                exc = future.exception()
                client.cancel(futures)
                raise exc
            i = index[future.key]
            results[i] = future.result()
            if on_result is not None:
                try:
                    on_result(i, results[i])
                except BaseException:
                    client.cancel(futures)
                    raise
            bar.update(1)
    finally:
        bar.close()
    return results


def chunked(items: Iterable[Any], size: int) -> list[list[Any]]:
    """Split ``items`` in lists of at most ``size``."""
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)]
