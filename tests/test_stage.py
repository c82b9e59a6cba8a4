"""The shared stage runner (pipeline.stage): plan, skip done volumes, refuse other settings,
run on the cluster, mark complete, record provenance."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import Field

from pipeline.config.base import StrictModel
from pipeline.config.cluster import ClusterConfig
from pipeline.errors import StoreError
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.volumes import read_volume, write_volume
from pipeline.stage import FieldWork, pending_volumes, refuse_other_settings, run_stage


class DoubleConfig(StrictModel):
    """A tiny stage: every volume times two."""

    factor: int = 2
    """Multiplier."""
    cluster: ClusterConfig = Field(default_factory=lambda: ClusterConfig(n_workers=1, threads_per_worker=1, processes=False, memory_limit="1GB"))
    """Where the tasks run."""


def double(task, location, factor):
    """Worker side: one volume of ``raw`` times ``factor`` into ``double``."""
    src, dst, t, c = task
    write_volume(location, dst, t, c, read_volume(location, src, t, c) * factor)
    return {"t": t, "c": c}


def _plate(tmp_path):
    plate = Plate.create(str(tmp_path / "stage.zarr"), name="stage")
    fld = plate.add_field("B10", 0)
    meta = ImageMeta(channels=("a", "b"))
    fld.create_image("raw", (3, 2, 2, 8, 8), "uint16", meta)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(3, 2, 2, 8, 8)).astype(np.uint16)
    for t in range(3):
        for c in range(2):
            write_volume(plate.location, fld.array_path(), t, c, data[t, c])
    fld.mark_complete()
    fld.create_image("double", (3, 2, 2, 8, 8), "uint16", meta)
    return plate, fld, data


def _work(fld):
    src, dst = fld.array_path("raw"), fld.array_path("double")
    tasks, skipped = pending_volumes(fld.done("double"), lambda t, c: (src, dst, t, c))
    return [FieldWork(fld, tasks, skipped, complete=fld.is_complete("double"))]


def test_pending_volumes_skips_done_ones():
    done = np.array([[True, False], [False, True], [False, False]])
    tasks, skipped = pending_volumes(done, lambda t, c: (t, c))
    assert tasks == [(0, 1), (1, 0), (2, 0), (2, 1)] and skipped == 2
    tasks, skipped = pending_volumes(np.array([True, False, True]), lambda t: t)
    assert tasks == [1] and skipped == 2


def test_refuse_other_settings():
    refuse_other_settings("x", None, "abc", False)  # nothing stored yet
    refuse_other_settings("x", "abc", "abc", False)
    refuse_other_settings("x", "old", "abc", True)  # overwrite
    with pytest.raises(StoreError, match=r"^x was written with other settings \(signature old != abc\); pass --overwrite"):
        refuse_other_settings("x", "old", "abc", False)
    with pytest.raises(StoreError, match="another chain"):
        refuse_other_settings("x", "old", "abc", False, what="chain")


def test_run_stage_runs_resumes_and_records(tmp_path, dask_client):
    plate, fld, data = _plate(tmp_path)
    config = DoubleConfig()
    # an interrupted run: one volume already done. On the session's cluster: a second, in-process
    # cluster opened here late in a full run hung twice this session with its worker idle (not
    # reproduced alone or with its neighbouring test files); the stages' own clusters are opened
    # by the run, demo and CLI tests
    write_volume(plate.location, fld.array_path("double"), 0, 0, data[0, 0] * 2)
    run = run_stage(plate, "double", config, _work(fld), double, progress=False, client=dask_client, factor=2, mark_complete=lambda w, rec: w.field.mark_complete("double", provenance=rec))
    assert len(run.results) == 5 and run.skipped == 1 and run.fields == ["B10/0"]
    assert fld.is_complete("double")
    assert plate.records()["double"]["stage"] == "double"
    for t in range(3):
        for c in range(2):
            np.testing.assert_array_equal(read_volume(plate.location, fld.array_path("double"), t, c), data[t, c] * 2)
    again = run_stage(plate, "double", config, _work(fld), double, progress=False, client=dask_client, factor=2, mark_complete=lambda w, rec: pytest.fail("nothing to mark"))
    assert again.results == [] and again.skipped == 6
