"""One runner for the per-volume distributed stages (preprocess, segment, cellcycle).

Every such stage does the same around its own work: for each field it checks the
inputs, compares the settings stored with the outputs against its own (refusing other
settings unless ``overwrite``), lists the volumes not done yet, runs one task per volume
on the cluster (:func:`pipeline.runner.run_tasks`), marks the outputs complete and
records its provenance in the store. A stage supplies what differs: the per-field plan
(:class:`FieldWork`, made with :func:`pending_volumes` and :func:`refuse_other_settings`),
the worker function, and how a field's output is marked complete;
:func:`run_stage` does the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.errors import StoreError
from pipeline.io.plate import Field, Plate
from pipeline.provenance import provenance

LOG = logging.getLogger(__name__)


@dataclass
class FieldWork:
    """What a stage will do in one field."""

    field: Field
    tasks: list = field(default_factory=list)
    """One task per volume still to do (small, picklable records)."""
    skipped: int = 0
    """Volumes already done (skipped: the run resumes)."""
    complete: bool = False
    """The field's output was already marked complete before this run."""
    plan: Any = None
    """The stage's own description of the field (its chains, shapes...)."""


@dataclass
class StageRun:
    """What :func:`run_stage` did."""

    work: list[FieldWork]
    results: list
    """The tasks' small results, in task order."""
    skipped: int
    seconds: float
    record: dict[str, Any]
    """The provenance record (written to the store when anything was marked complete)."""

    @property
    def fields(self) -> list[str]:
        return [str(w.field) for w in self.work]


def pending_volumes(done: np.ndarray, make: Callable[..., Any]) -> tuple[list, int]:
    """Tasks for the volumes not done yet, in index order, and the number skipped.

    Parameters
    ----------
    done : numpy.ndarray
        Boolean, one entry per volume (``(T,)`` or ``(T, C)``).
    make : callable
        ``make(*index)`` -> the task of the volume at ``index``.
    """
    done = np.asarray(done, dtype=bool)
    tasks = [make(*index) for index in np.ndindex(done.shape) if not done[index]]
    return tasks, int(done.sum())


def refuse_other_settings(where: str, stored: str | None, signature: str, overwrite: bool, *, what: str = "settings") -> None:
    """Raise :class:`~pipeline.errors.StoreError` when outputs were made with other settings.

    Parameters
    ----------
    where : str
        The output, as the message names it (store URL, field, array).
    stored : str or None
        Signature stored with the output (``None``: nothing stored yet).
    signature : str
        Signature of this run's settings.
    overwrite : bool
        Recompute anyway (the caller drops the old output).
    what : str
        What the signature covers, for the message (``"settings"``, ``"chain"``).
    """
    if stored is not None and stored != signature and not overwrite:
        article = "another" if what != "settings" else "other"
        raise StoreError(f"{where} was written with {article} {what} (signature {stored} != {signature}); pass --overwrite to recompute it")


def run_stage(
    plate: Plate,
    stage: str,
    config,
    work: Sequence[FieldWork],
    func: Callable[..., Any],
    *,
    progress: bool = True,
    client=None,
    unit: str = "volume",
    dispatch: Callable[[Any, list], list] | None = None,
    mark_complete: Callable[[FieldWork, dict], None] | None = None,
    record: dict[str, Any] | None = None,
    **task_kwargs: Any,
) -> StageRun:
    """Run the planned tasks of every field, then mark the fields complete and record provenance.

    Parameters
    ----------
    plate : Plate
        The store (opened ``r+``).
    stage : str
        Stage name (progress bar, provenance key).
    config : pydantic model
        The stage's configuration; ``config.cluster`` says where the tasks run.
    work : sequence of FieldWork
        The plan, checked by the stage before anything was written.
    func : callable
        Module-level worker function, called as ``func(task, location=..., **task_kwargs)``.
    progress : bool
        Show a progress bar.
    client : distributed.Client, optional
        Run on this client instead of opening ``config.cluster``.
    unit : str
        Progress-bar unit.
    dispatch : callable, optional
        ``dispatch(client, tasks) -> results`` instead of one Dask task per item
        (preprocessing's block mode builds a graph per volume).
    mark_complete : callable, optional
        ``mark_complete(field_work, record)`` for each field that ran tasks or was not
        complete yet; the record is then written to the store. ``None``: the stage
        finishes its outputs itself (the record is returned, not written).
    record : dict, optional
        Extra provenance entries (settings, signature...).
    **task_kwargs
        Passed to every task (keep them small).

    Returns
    -------
    StageRun
    """
    from pipeline.cluster import use_client
    from pipeline.runner import run_tasks

    work = list(work)
    tasks = [task for w in work for task in w.tasks]
    skipped = sum(w.skipped for w in work)
    if skipped:
        LOG.info("%s: %d %s(s) already done: skipped", stage, skipped, unit)
    start = time.perf_counter()
    results: list = []
    if tasks:
        with use_client(client, config.cluster, in_process=plate.location.in_memory) as own:
            if dispatch is not None:
                results = dispatch(own, tasks)
            else:
                results = run_tasks(own, func, tasks, desc=stage, progress=progress, unit=unit, location=plate.location, **task_kwargs)
    seconds = time.perf_counter() - start
    rec = provenance(stage, config, fields=[str(w.field) for w in work], **(record or {}))
    if mark_complete is not None:
        pending = [w for w in work if w.tasks or not w.complete]
        for w in pending:
            mark_complete(w, rec)
        if pending:
            plate.record(stage, rec)
    return StageRun(work, results, skipped, seconds, rec)
