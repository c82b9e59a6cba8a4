"""Open the Dask cluster named in a stage's config, as one context manager.

>>> from pipeline.config.cluster import ClusterConfig
>>> with open_client(ClusterConfig(n_workers=1)) as client:   # doctest: +SKIP
...     client.submit(sum, [1, 2]).result()
3
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from pipeline.config.cluster import ClusterConfig
from pipeline.errors import SpheroidError, require

LOG = logging.getLogger(__name__)


QUIET = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "500ms",
}
"""Dask settings for clusters started without a dashboard.

Distributed's statistical profiler samples every worker thread's stack every 10 ms and
its system monitor polls psutil twice a second, for the dashboard's sake; together with
the 20 ms event-loop tick they kept an idle worker process and the client each at about
4 % of a core (measured here), which a busy worker loses to them as well.
"""


def quiet_settings(config: ClusterConfig) -> dict:
    """The :data:`QUIET` settings, or none when the dashboard is wanted."""
    return {} if config.dashboard else dict(QUIET)


def _env_exports(settings: dict) -> list[str]:
    """``export DASK_...=value`` lines that give remote workers the same settings."""
    lines = []
    for key, value in settings.items():
        name = "DASK_" + "__".join(part.upper().replace("-", "_") for part in key.split("."))
        lines.append(f"export {name}={value}")
    return lines


def worker_log_level() -> int:
    """Level of the local workers' own logs: only critical ones, unless the run is verbose.

    A task's error reaches the client, which reports it in one line; the worker's
    "Compute Failed" block and its warnings about tasks cancelled at shutdown would
    repeat it as a screenful. ``-v`` shows them.
    """
    return logging.WARNING if logging.getLogger("pipeline").isEnabledFor(logging.INFO) else logging.CRITICAL


@contextmanager
def stops_left_to_this_process() -> Iterator[None]:
    """Start processes that ignore SIGINT and SIGTERM: they inherit the ignored dispositions.

    Ctrl-C in a terminal signals the whole process group, and ``scancel`` every process
    of the job. The process that started the run handles the signal (one line, then the
    cluster closed in order, which stops the workers); without this every worker and
    nanny would also print a KeyboardInterrupt traceback, or die at once and make the
    scheduler warn about lost tasks and restart them. Dask itself stops a worker that
    does not close when asked with SIGKILL, and a worker whose parent is gone exits.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_workers() -> int:
    """Number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def open_client(config: ClusterConfig, *, in_process: bool = False) -> Iterator["distributed.Client"]:  # noqa: F821
    """Start (or connect to) the configured cluster and yield a client.

    Parameters
    ----------
    config : ClusterConfig
        Which cluster: ``local``, ``address`` or ``slurm``.
    in_process : bool
        Force a local cluster's workers to be threads of this process (needed
        for ``memory://`` stores, which other processes cannot see).

    Yields
    ------
    distributed.Client
        Closed, with its cluster, when the block ends (a scheduler named by
        ``address`` is left running).
    """
    import dask
    from distributed import Client, LocalCluster

    if config.kind == "address":
        LOG.info("connecting to Dask scheduler at %s", config.address)
        try:
            client = Client(config.address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise SpheroidError(f"cannot reach Dask scheduler {config.address}: {exc}") from exc
        with client:
            yield client
        return

    if config.kind == "slurm":
        with dask.config.set(quiet_settings(config)), _slurm_cluster(config) as cluster, Client(cluster) as client:
            yield client
        return

    n_workers = config.n_workers or default_workers()
    processes = config.processes and not in_process
    LOG.info(
        "starting local Dask cluster: %d worker(s) x %d thread(s), %s",
        n_workers,
        config.threads_per_worker,
        "processes" if processes else "threads",
    )
    from pipeline.runner import WORKER_LOG_LEVEL

    os.environ[WORKER_LOG_LEVEL] = str(worker_log_level())  # read by the workers' first task
    with dask.config.set(quiet_settings(config)), stops_left_to_this_process():  # worker processes get the client's config
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=config.threads_per_worker,
            processes=processes,
            memory_limit=config.memory_limit,
            dashboard_address=":0" if config.dashboard else None,
            # without a dashboard the scheduler still serves /health etc., by default on port 8787:
            # a random local port avoids "Port 8787 is already in use" when clusters run side by side
            scheduler_kwargs=None if config.dashboard else {"dashboard_address": "127.0.0.1:0"},
            silence_logs=worker_log_level(),
        )
    try:
        with dask.config.set(quiet_settings(config)), Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextmanager
def use_client(client, config: ClusterConfig, *, in_process: bool = False) -> Iterator["distributed.Client"]:  # noqa: F821
    """Yield ``client`` when one is given (left open), else open the configured cluster.

    Stages take an optional ``client`` so that several of them can share one cluster
    (the demo, notebooks, tests); without it each opens and closes its own.
    """
    if client is not None:
        yield client
        return
    with open_client(config, in_process=in_process) as own:
        yield own


@contextmanager
def _slurm_cluster(config: ClusterConfig):
    jobqueue = require("dask_jobqueue", "slurm")
    s = config.slurm
    cluster = jobqueue.SLURMCluster(
        queue=s.queue,
        account=s.account,
        cores=s.cores,
        processes=s.processes,
        memory=s.memory,
        walltime=s.walltime,
        interface=s.interface,
        local_directory=s.local_directory,
        log_directory=s.log_directory,
        job_extra_directives=list(s.job_extra_directives),
        job_script_prologue=list(s.job_script_prologue) + _env_exports(quiet_settings(config)),
        python=s.python or sys.executable,
        scheduler_options={"dashboard_address": ":0" if config.dashboard else None},
    )
    LOG.info("SLURM worker job script:\n%s", cluster.job_script())
    try:
        if s.adapt:
            cluster.adapt(minimum=1, maximum=s.jobs)
        else:
            cluster.scale(jobs=s.jobs)
        yield cluster
    finally:
        cluster.close()
