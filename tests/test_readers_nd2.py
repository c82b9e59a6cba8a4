"""ND2 reader: loop layout, frame order, time step and reading, on nd2's own structures.

No small ND2 file can be made or found here (the ``nd2`` package cannot write
ND2, and its sdist ships no sample files), so the reader's mapping logic is
tested on nd2's public structures (``TimeLoop``, ``ZStackLoop``, ``XYPosLoop``,
``Attributes``, ``ChannelMeta``) and checked against nd2's own frame ordering
(``nd2._util.loop_indices``, what ``ND2File.loop_indices`` returns). Reading goes
through a stand-in ``ND2File`` that serves frames with ``read_frame``'s contract.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

nd2 = pytest.importorskip("nd2")
from nd2 import structures as st  # noqa: E402
from nd2._util import VoxelSize, loop_indices  # noqa: E402

from pipeline.errors import InputError  # noqa: E402
from pipeline.io.readers import nd2 as reader  # noqa: E402


def time_loop(count, period_ms, avg=None, level=0):
    params = st.TimeLoopParams(startMs=0, periodMs=period_ms, durationMs=0, periodDiff=st.PeriodDiff(avg=avg or 0))
    return st.TimeLoop(count=count, nestingLevel=level, parameters=params)


def z_loop(count, step=5.0, level=2):
    return st.ZStackLoop(count=count, nestingLevel=level, parameters=st.ZStackLoopParams(homeIndex=0, stepUm=step, bottomToTop=True))


def xy_loop(count, level=1):
    points = [st.Position(stagePositionUm=st.StagePosition(0.0, 0.0, 0.0), name=f"p{i}") for i in range(count)]
    return st.XYPosLoop(count=count, nestingLevel=level, parameters=st.XYPosLoopParams(isSettingZ=False, points=points))


def sizes_of(experiment, c, y, x):
    """What ``ND2File.sizes`` gives for an experiment: loops in order, then C, Y, X; length-1 axes dropped."""
    names = {"TimeLoop": "T", "NETimeLoop": "T", "XYPosLoop": "P", "ZStackLoop": "Z"}
    sizes = {names[loop.type]: loop.count for loop in experiment}
    sizes.update(C=c, Y=y, X=x)
    return {k: v for k, v in sizes.items() if v != 1}


@pytest.mark.parametrize(
    "experiment",
    [
        [time_loop(3, 1000), xy_loop(2), z_loop(4)],
        [xy_loop(2, level=0), time_loop(3, 1000, level=1), z_loop(4)],
        [time_loop(3, 1000), z_loop(4, level=1)],
        [z_loop(5, level=0)],
        [time_loop(1, 1000), xy_loop(3), z_loop(2)],
    ],
)
def test_frame_indices_follow_nd2_loop_order(experiment):
    sizes = sizes_of(experiment, 3, 8, 6)
    layout = reader.nd2_layout(sizes, label="a.nd2")
    frames = loop_indices(experiment)  # nd2's own order of frames
    t_n, c_n, z_n, y, x = layout.shape
    assert (c_n, y, x) == (3, 8, 6)
    seen = set()
    for t in range(t_n):
        for p in range(layout.positions):
            idx = layout.frame_indices(t, p)
            assert len(idx) == z_n
            for z, i in enumerate(idx):
                coords = {k: v for k, v in frames[i].items()}
                assert coords.get("T", 0) == t and coords.get("P", 0) == p and coords.get("Z", 0) == z
                seen.add(i)
    assert len(seen) == len(frames)


def test_layout_rgb_and_unknown_loops():
    assert reader.nd2_layout({"T": 2, "Y": 4, "X": 5, "S": 3}, label="a").shape == (2, 3, 1, 4, 5)
    assert reader.nd2_layout({"Y": 4, "X": 5}, label="a").shape == (1, 1, 1, 4, 5)
    with pytest.raises(InputError, match="a.nd2: ND2 loop"):
        reader.nd2_layout({"U": 2, "Y": 4, "X": 5}, label="a.nd2")


def test_time_step_prefers_measured_interval():
    assert reader.nd2_time_step([time_loop(4, 1_800_000)]) == 1800.0
    assert reader.nd2_time_step([time_loop(4, 1_800_000, avg=1_799_500.0)]) == pytest.approx(1799.5)
    assert reader.nd2_time_step([time_loop(1, 1000), z_loop(3)]) is None
    periods = [st.Period(startMs=0, periodMs=60_000, durationMs=0, periodDiff=st.PeriodDiff(), count=5)]
    ne = st.NETimeLoop(count=5, nestingLevel=0, parameters=st.NETimeLoopParams(periods=periods))
    assert reader.nd2_time_step([ne]) == 60.0


class FakeND2File:
    """Serves a ``(T, P, Z, C, Y, X)`` array as nd2.ND2File would (``read_frame`` squeezes C=1)."""

    data: np.ndarray = None
    experiment: list = []
    recorded: int | None = None

    def __init__(self, path):
        self.path = path
        t, p, z, c, y, x = self.data.shape
        self.sizes = sizes_of(self.experiment, c, y, x)
        self.dtype = self.data.dtype
        n = len(loop_indices(self.experiment))
        self.attributes = st.Attributes(16, 16, c, y, "unsigned", self.recorded if self.recorded is not None else n, widthPx=x, channelCount=c)
        names = ("Hoechst", "Cy3", "GFP")[:c]
        self.metadata = SimpleNamespace(channels=[SimpleNamespace(channel=st.ChannelMeta(name=n, index=i, color=st.Color(0, 0, 0))) for i, n in enumerate(names)])

    def voxel_size(self):
        return VoxelSize(1.24, 1.24, 5.0)

    def read_frame(self, index):
        coords = loop_indices(self.experiment)[index]
        frame = self.data[coords.get("T", 0), coords.get("P", 0), coords.get("Z", 0)]
        return frame.squeeze() if frame.shape[0] == 1 else frame

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def fake_nd2(monkeypatch, tmp_path, rng):
    def make(experiment, c=3, recorded=None):
        t = next((loop.count for loop in experiment if loop.type == "TimeLoop"), 1)
        p = next((loop.count for loop in experiment if loop.type == "XYPosLoop"), 1)
        z = next((loop.count for loop in experiment if loop.type == "ZStackLoop"), 1)
        data = rng.integers(0, 4095, size=(t, p, z, c, 10, 12), dtype=np.uint16)
        fake = type("F", (FakeND2File,), {"data": data, "experiment": experiment, "recorded": recorded})
        monkeypatch.setattr(nd2, "ND2File", fake)
        path = tmp_path / "B10.nd2"
        path.write_bytes(b"stand-in")
        reader._nd2_cache.clear()
        return path, data

    return make


def test_open_and_read_positions(fake_nd2):
    path, data = fake_nd2([time_loop(3, 1_800_000), xy_loop(2), z_loop(4)])
    sources = reader.open_nd2(path)
    assert [s.shape for s in sources] == [(3, 3, 4, 10, 12)] * 2
    src = sources[1]
    assert src.meta.channels == ("Hoechst", "Cy3", "GFP")
    assert src.meta.voxel_size == (5.0, 1.24, 1.24) and src.meta.time_step == 1800.0
    np.testing.assert_array_equal(src.read(2), np.moveaxis(data[2, 1], 1, 0))
    np.testing.assert_array_equal(src.read(0, [2, 0]), np.moveaxis(data[0, 1], 1, 0)[[2, 0]])


def test_single_channel_frames(fake_nd2):
    path, data = fake_nd2([time_loop(2, 1000), z_loop(3, level=1)], c=1)
    (src,) = reader.open_nd2(path)
    assert src.shape == (2, 1, 3, 10, 12)
    np.testing.assert_array_equal(src.read(1)[0], data[1, 0, :, 0])


def test_interrupted_acquisition_is_refused(fake_nd2):
    path, _ = fake_nd2([time_loop(3, 1000), z_loop(4, level=1)], recorded=7)
    with pytest.raises(InputError, match=r"B10\.nd2: truncated or interrupted acquisition: 7 of 12 frames"):
        reader.open_nd2(path)


def test_convert_positions_become_fields(fake_nd2, tmp_path):
    from pipeline.config.cluster import ClusterConfig
    from pipeline.config.convert import ConvertConfig
    from pipeline.convert.run import convert
    from pipeline.io.plate import Plate

    path, data = fake_nd2([time_loop(2, 600_000), xy_loop(2), z_loop(3)])
    out = str(tmp_path / "nd2.zarr")
    config = ConvertConfig(cluster=ClusterConfig(n_workers=1, processes=False))  # the stand-in lives in this process
    summary = convert([path], out, config, progress=False)
    assert summary["written"] == 2 * 2 * 3
    plate = Plate.open(out)
    assert [str(f) for f in plate.fields()] == ["B10/0", "B10/1"]
    field = plate.field("B10", 1)
    np.testing.assert_array_equal(field.image()[:], np.moveaxis(data[:, 1], 2, 1))
    assert field.meta().time_step == 600.0 and field.meta().channels == ("Hoechst", "Cy3", "GFP")
