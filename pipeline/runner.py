"""Run many small tasks on a Dask cluster with a progress bar, keeping only small results."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

LOG = logging.getLogger(__name__)


def run_tasks(
    client,
    func: Callable[..., Any],
    items: Sequence[Any],
    *,
    desc: str,
    progress: bool = True,
    unit: str = "volume",
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
    futures = client.map(func, list(items), pure=False, **kwargs)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    bar = tqdm(total=len(futures), desc=desc, unit=unit, disable=not progress, leave=False)
    try:
        # one result at a time, from this thread: as_completed(with_results=True) fetches them
        # concurrently on the event loop, and in a process with two clients that once tripped
        # an assertion in tornado's stream and left the iterator waiting forever
        for future in as_completed(futures):
            if future.status == "error":
                exc = future.exception()
                client.cancel(futures)
                raise exc
            results[index[future.key]] = future.result()
            bar.update(1)
    finally:
        bar.close()
    return results


def chunked(items: Iterable[Any], size: int) -> list[list[Any]]:
    """Split ``items`` in lists of at most ``size``."""
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)]
