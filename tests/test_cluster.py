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


def _fail_like_storage(item, kind):
    import errno

    import zarr

    from pipeline.errors import StoreError

    if kind == "zarr":
        try:
            zarr.open_array(store=str(item), path="missing", mode="r")
        except Exception as exc:  # zarr's not-found errors do not survive pickling as a cause
            raise StoreError(f"{item}/missing: no such array") from exc
    raise OSError(errno.ENOSPC, "No space left on device", f"{item}/c/0/0")


@pytest.mark.parametrize("kind,message", [("zarr", r"x\.zarr/missing: no such array$"), ("disk", r"x\.zarr/c/0/0: No space left on device \(disk full\)$")])
def test_user_errors_cross_from_workers_intact(dask_client, tmp_path, kind, message):
    """A StoreError chained to an unpicklable cause, and a storage OSError, reach the client as
    StoreErrors with their message (not Dask's bare ``Exception(repr)``), for one error line."""
    from pipeline.errors import StoreError
    from pipeline.runner import run_tasks

    import zarr

    zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    with pytest.raises(StoreError, match=message) as info:
        run_tasks(dask_client, _fail_like_storage, [tmp_path / "x.zarr"], desc="t", progress=False, kind=kind)
    assert type(info.value) is StoreError and info.value.__cause__ is None
