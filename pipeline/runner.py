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
        # results are fetched on the client's event loop as tasks finish, not one round trip each here
        for future, result in as_completed(futures, with_results=True, raise_errors=False):
            if future.status == "error":
                client.cancel(futures)
                _, exc, tb = result
                raise exc.with_traceback(tb)
            if future.status == "cancelled":  # e.g. the cluster was closed under us
                client.cancel(futures)
                raise result
            results[index[future.key]] = result
            bar.update(1)
    finally:
        bar.close()
    return results


def chunked(items: Iterable[Any], size: int) -> list[list[Any]]:
    """Split ``items`` in lists of at most ``size``."""
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)]
