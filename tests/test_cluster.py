"""The cluster context manager: local clusters start without the dashboard's sampling overheads."""

from __future__ import annotations

import dask
import pytest

from pipeline.cluster import QUIET, _env_exports, open_client, quiet_settings
from pipeline.config.cluster import ClusterConfig


def _worker_settings() -> dict:
    import dask

    return {key: dask.config.get(key) for key in QUIET}


@pytest.mark.parametrize("dashboard", [False, True])
def test_local_worker_processes_get_the_quiet_settings(dashboard):
    config = ClusterConfig(n_workers=1, threads_per_worker=1, memory_limit="1GB", dashboard=dashboard)
    with open_client(config) as client:
        (seen,) = client.run(_worker_settings).values()
    if dashboard:  # the dashboard's profiler stays on when asked for
        assert seen["distributed.worker.profile.enabled"] is True
    else:
        assert seen == QUIET
    assert dask.config.get("distributed.worker.profile.enabled") is True  # the caller's config is restored


def test_remote_workers_get_the_same_settings_through_the_environment():
    lines = _env_exports(quiet_settings(ClusterConfig()))
    env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    assert "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED" in env
    parsed = dask.config.collect_env(env)
    for key, value in QUIET.items():
        assert dask.config.get(key, config=parsed) == value  # "-" and "_" are the same to dask
    assert quiet_settings(ClusterConfig(dashboard=True)) == {}


def _square_or_fail(x: int, *, fail_at: int = -1) -> dict:
    if x == fail_at:
        raise ValueError(f"volume {x} is corrupt")
    return {"x": x, "square": x * x}


def test_run_tasks_keeps_order_and_raises_the_task_error(dask_client):
    from pipeline.runner import run_tasks

    results = run_tasks(dask_client, _square_or_fail, list(range(7)), desc="t", progress=False)
    assert [r["square"] for r in results] == [x * x for x in range(7)]
    assert run_tasks(dask_client, _square_or_fail, [], desc="t", progress=False) == []
    with pytest.raises(ValueError, match="volume 3 is corrupt"):
        run_tasks(dask_client, _square_or_fail, list(range(6)), desc="t", progress=False, fail_at=3)
