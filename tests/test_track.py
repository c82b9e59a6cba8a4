"""Tracking (laptrack over sliding windows), its scores, and the cellcycle / track commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cellcycle import runner as run
from pipeline.cellcycle.track import track_table
from pipeline.cellcycle.validate import ctc_scores, link_scores
from pipeline.cli.main import cli
from pipeline.config.cellcycle import CellcycleConfig, TrackConfig
from pipeline.config.synth import SynthConfig
from pipeline.groundtruth.tiffio import write_tiff
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.tables import read_table
from pipeline.io.volumes import write_volume
from pipeline.synth import generate

CONFIG = SynthConfig(shape=(10, 128, 128), n_nuclei=150, n_timepoints=8)


@pytest.fixture(scope="module")
def timelapse():
    return generate(CONFIG, seed=3)


def _shuffled(res, seed=0):
    tb = res.table.copy()
    for axis, v in zip("zyx", res.voxel_size):
        tb[f"centroid_{axis}"] *= v
    tb["node"] = np.arange(len(tb))
    rng = np.random.default_rng(seed)
    tb["label"] = tb.groupby("t")["label"].transform(lambda s: rng.permutation(len(s)) + 1)
    tb["phase"] = tb["phase"].replace({"early G1": "early-G1"})
    return tb


def test_tracks_synthetic_divisions(timelapse):
    truth = _shuffled(timelapse)
    pred = track_table(truth.drop(columns=["track_id", "parent_track_id"]), TrackConfig())
    scores = link_scores(truth, pred)
    assert scores["link"]["f1"] > 0.97
    assert scores["division"]["f1"] > 0.8
    ctc = ctc_scores(truth, pred)
    assert ctc["DET"] == 1.0 and ctc["TRA"] > 0.97
    assert ctc["BC(0)"] == pytest.approx(scores["division"]["f1"])
    assert ctc["AOGM_ED"] == scores["link"]["predicted"] - scores["link"]["tp"]
    # daughters get new tracks whose parent is the mother's track
    daughters = pred[pred["parent_track_id"] > 0]
    assert set(daughters["parent_track_id"]) <= set(pred["track_id"])


def test_windows_give_the_same_tracks(timelapse):
    """Windows of 6 frames (links carried across) link exactly as one window over all frames."""
    table = _shuffled(timelapse).drop(columns=["track_id", "parent_track_id"])
    whole = track_table(table, TrackConfig(window=40))
    windowed = track_table(table, TrackConfig(window=6))
    a = link_scores(whole.assign(node=table.sort_values(["t", "label"])["node"].to_numpy()), windowed.assign(node=table.sort_values(["t", "label"])["node"].to_numpy()))
    assert a["link"]["f1"] > 0.995


def test_phase_check_removes_divisions_of_g1_mothers(timelapse):
    truth = _shuffled(timelapse)
    no_phase = truth.drop(columns=["track_id", "parent_track_id"])
    everything_g1 = no_phase.assign(phase="G1")
    pred = track_table(everything_g1, TrackConfig())
    assert (pred["parent_track_id"] == 0).all()


def _labels_file(tmp_path, res, frames=None):
    labels = res.labels if frames is None else res.labels[:frames]
    return write_tiff(tmp_path / "labels.tif", labels.astype(np.uint16), res.voxel_size)


def test_track_cli_one_off(tmp_path, timelapse):
    path = _labels_file(tmp_path, timelapse)
    out = tmp_path / "tracks.csv"
    result = CliRunner().invoke(cli, ["-q", "track", str(path), "--voxel-size", "5", "1.24", "1.24", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["t", "label", "track_id", "parent_track_id"]
    assert len(table) == len(timelapse.table)
    assert (table["parent_track_id"] > 0).any()


def test_track_cli_refuses_one_frame(tmp_path, timelapse):
    path = _labels_file(tmp_path, timelapse, frames=1)
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, timelapse.labels[:1].astype(np.uint16), imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "tracks.csv"
    for bad in (path, single):
        result = CliRunner().invoke(cli, ["-q", "track", str(bad), "--out", str(out)])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and str(bad) in result.output
        assert not out.exists()


def _files(tmp_path, res, t=0):
    image = tmp_path / "image.tif"
    # an ImageJ hyperstack stores Z before C: the reader puts C first
    tifffile.imwrite(image, res.images[t].transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX"})
    labels = write_tiff(tmp_path / "nuclei.tif", res.labels[t].astype(np.uint16), res.voxel_size)
    return image, labels


def test_cellcycle_cli_one_off(tmp_path, timelapse):
    image, labels = _files(tmp_path, timelapse)
    out = tmp_path / "nuclei.csv"
    args = ["-q", "cellcycle", str(image), "--labels", str(labels), "--channels", "hoechst,cy3,gfp", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert {"label", "cy3_mean", "gfp_median", "hoechst_integrated", "phase", "confidence"} <= set(table.columns)
    assert set(table["phase"]) <= {"G1", "G1/S", "S/G2/M", "early-G1"}
    assert len(table) == int((timelapse.table["t"] == 0).sum())


def test_cellcycle_cli_two_d(tmp_path, timelapse):
    """CYX image and YX labels (one slice of the synthetic stack)."""
    z = 4
    image = tmp_path / "image2d.tif"
    tifffile.imwrite(image, timelapse.images[0, :, z], photometric="minisblack", metadata={"axes": "CYX"})
    labels = write_tiff(tmp_path / "nuclei2d.tif", timelapse.labels[0, z].astype(np.uint16))
    out = tmp_path / "n2d.csv"
    result = CliRunner().invoke(cli, ["-q", "cellcycle", str(image), "--labels", str(labels), "--channels", "Hoechst,Cy3,GFP", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == len(np.unique(timelapse.labels[0, z])) - 1


@pytest.mark.parametrize(
    "case, message",
    [("channels", "2 channels in the image"), ("shape", "differ"), ("roles", "key 'channels.red'")],
)
def test_cellcycle_cli_bad_input(tmp_path, timelapse, case, message):
    image, labels = _files(tmp_path, timelapse)
    channels = "hoechst,cy3,gfp"
    if case == "channels":
        tifffile.imwrite(image, timelapse.images[0, :2].transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX"})
    elif case == "shape":
        write_tiff(labels, timelapse.labels[0, :, :64].astype(np.uint16), timelapse.voxel_size)
    elif case == "roles":
        channels = "dna,red,green"
    out = tmp_path / "nuclei.csv"
    result = CliRunner().invoke(cli, ["-q", "cellcycle", str(image), "--labels", str(labels), "--channels", channels, "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and message in result.output
    assert not out.exists()


def _store(tmp_path, res, *, with_labels=True):
    plate = Plate.create(str(tmp_path / "p.zarr"))
    field = plate.add_field("B10")
    meta = ImageMeta(channels=res.channels, voxel_size=res.voxel_size, time_step=res.time_step_s)
    field.create_image("raw", (res.images.shape[0], 3, *res.images.shape[2:]), "uint16", meta)
    for t in range(res.images.shape[0]):
        for c in range(3):
            write_volume(plate.location, field.array_path(), t, c, res.images[t, c])
    field.mark_complete()
    if with_labels:
        lmeta = ImageMeta(channels=("nuclei",), voxel_size=res.voxel_size, time_step=res.time_step_s)
        field.create_labels("nuclei", (res.labels.shape[0], 1, *res.labels.shape[1:]), lmeta)
        for t in range(res.labels.shape[0]):
            write_volume(plate.location, f"{field.label_path('nuclei')}/0", t, 0, res.labels[t])
        field.mark_complete("nuclei", label=True)
    return plate


def test_store_cellcycle_and_track(tmp_path, timelapse, dask_client, monkeypatch):
    plate = _store(tmp_path, timelapse)
    summary = run.run_cellcycle(plate, CellcycleConfig(), client=dask_client, progress=False)
    assert summary["volumes"] == CONFIG.n_timepoints and summary["nuclei"] == len(timelapse.table)
    field = plate.field("B10")
    table = read_table(field, "nuclei")
    assert {"t", "label", "centroid_z", "volume", "cy3_mean", "phase", "confidence", "dead", "track_id", "parent_track_id"} <= set(table.columns)
    truth = timelapse.table[["t", "label", "phase"]].rename(columns={"phase": "truth"})
    merged = table.merge(truth, on=["t", "label"])
    assert (merged["phase"] == merged["truth"].replace({"early G1": "early-G1"})).mean() > 0.8
    # resumes: nothing measured again; a lost part is measured again
    again = run.run_cellcycle(plate, CellcycleConfig(), client=dask_client, progress=False)
    assert again["volumes"] == 0 and again["skipped"] == CONFIG.n_timepoints
    fs, _ = plate.location.filesystem()
    fs.rm(fs._strip_protocol(field.table_url("nuclei.parts/t000002")))
    third = run.run_cellcycle(plate, CellcycleConfig(), client=dask_client, progress=False)
    assert third["volumes"] == 1
    # other measurement settings are refused without --overwrite
    with pytest.raises(Exception, match="other settings"):
        run.run_cellcycle(plate, CellcycleConfig(background={"method": "slice"}), client=dask_client, progress=False)
    result = CliRunner().invoke(cli, ["-q", "track", str(tmp_path / "p.zarr")])
    assert result.exit_code == 0, result.output
    table = read_table(field, "nuclei")
    assert (table["track_id"] > 0).all() and (table["parent_track_id"] > 0).any()
    assert {"p_red", "p_green", "phase_track", "confidence_track"} <= set(table.columns)
    merged = table.merge(truth, on=["t", "label"])
    want = merged["truth"].replace({"early G1": "early-G1"})
    assert (merged["phase_track"] == want).mean() > 0.85
    tracks = read_table(field, "tracks")
    assert {"track_id", "phase_sequence", "hours_G1", "divides"} <= set(tracks.columns)
    assert set(tracks["track_id"]) == set(table["track_id"])
    _track_resumes(tmp_path, plate, field, dask_client, monkeypatch)


def _track_resumes(tmp_path, plate, field, dask_client, monkeypatch):
    """A finished field is not tracked again; lost tracks, other settings and a new nucleus table are."""
    calls = []
    real = run.track_frames

    def counting(frames, config):
        calls.append(config)
        return real(frames, config)

    monkeypatch.setattr(run, "track_frames", counting)
    result = CliRunner().invoke(cli, ["-q", "track", str(tmp_path / "p.zarr")])
    assert result.exit_code == 0, result.output
    assert "1 already done" in result.output and calls == []
    fs, _ = plate.location.filesystem()
    fs.rm(fs._strip_protocol(field.table_url("tracks")))  # interrupted before the field was finished
    assert run.run_track(plate, TrackConfig(), progress=False)["fields"] == [str(field)] and len(calls) == 1
    assert run.run_track(plate, TrackConfig(), progress=False)["skipped"] == [str(field)] and len(calls) == 1
    other = TrackConfig(max_distance_um=8.0)
    with pytest.raises(Exception, match="other settings"):
        run.run_track(plate, other, progress=False)
    assert run.run_track(plate, other, overwrite=True, progress=False)["fields"] == [str(field)] and len(calls) == 2
    assert run.run_track(plate, other, progress=False)["skipped"] == [str(field)]
    # a new nucleus table (cellcycle re-run) is tracked again, whatever settings made the old tracks
    run.run_cellcycle(plate, CellcycleConfig(), client=dask_client, progress=False)
    assert run.run_track(plate, TrackConfig(), progress=False)["fields"] == [str(field)] and len(calls) == 3
    assert (read_table(field, "nuclei")["track_id"] > 0).all()


def test_store_without_labels(tmp_path, timelapse):
    _store(tmp_path, timelapse, with_labels=False)
    result = CliRunner().invoke(cli, ["-q", "cellcycle", str(tmp_path / "p.zarr")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "no complete labels 'nuclei'" in result.output
    result = CliRunner().invoke(cli, ["-q", "track", str(tmp_path / "p.zarr")])
    assert result.exit_code == 1 and "run `spheroid cellcycle` first" in result.output


def test_tracks_from_links_round_trip(timelapse):
    """The true tracks, turned into links and back, are the same lineage."""
    from pipeline.cellcycle.validate import edges, tracks_from_links

    truth = _shuffled(timelapse)
    back = tracks_from_links(truth[["t", "node"]], edges(truth))
    assert edges(back) == edges(truth)
    assert link_scores(truth, back)["division"]["f1"] == 1.0
    with pytest.raises(ValueError, match="two predecessors"):
        tracks_from_links(pd.DataFrame({"t": [0, 0, 1], "node": [1, 2, 3]}), [(1, 3), (2, 3)])


def test_tiles_link_like_the_whole_field(timelapse, monkeypatch):
    """Tracking in y/x tiles of ~40 nuclei (stitched) links as tracking each frame whole."""
    from pipeline.cellcycle import tiles

    calls = []
    real = tiles._tiles
    monkeypatch.setattr(tiles, "_tiles", lambda *a: calls.append(len(real(*a))) or real(*a))
    table = _shuffled(timelapse).drop(columns=["track_id", "parent_track_id"])
    whole = track_table(table, TrackConfig(tile_nuclei=None))
    tiled = track_table(table, TrackConfig(tile_nuclei=40, window=6))
    node = table.sort_values(["t", "label"])["node"].to_numpy()
    a = link_scores(whole.assign(node=node), tiled.assign(node=node))
    assert calls and min(calls) >= 3  # it did tile
    assert a["link"]["f1"] > 0.99 and a["division"]["f1"] > 0.9


def test_sparse_laptrack_links_like_laptrack():
    """The k-d tree candidates give laptrack's own links (gaps, divisions, fixed edges)."""
    from laptrack import LapTrack

    from pipeline.cellcycle.lap import SparseLapTrack

    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 120, size=(300, 3))
    coords = []
    for _ in range(6):
        pos = pos + rng.normal(0, 1.5, size=pos.shape)
        split = rng.random(len(pos)) < 0.03
        pos = np.concatenate([pos, pos[split] + rng.normal(0, 3, size=(int(split.sum()), 3))])
        coords.append(pos[rng.random(len(pos)) > 0.05])  # missed detections: gaps to close
    kw = dict(cutoff=100.0, gap_closing_cutoff=100.0, gap_closing_max_frame_count=2, splitting_cutoff=144.0)
    want = LapTrack(**kw).predict(coords)
    edges = {tuple(sorted(e)) for e in want.edges()}
    assert edges == {tuple(sorted(e)) for e in SparseLapTrack(**kw).predict(coords).edges()}
    fixed = sorted(e for e in edges if e[0][0] < 2)[:50]
    want = {tuple(sorted(e)) for e in LapTrack(**kw).predict(coords, connected_edges=fixed).edges()}
    assert want == {tuple(sorted(e)) for e in SparseLapTrack(**kw).predict(coords, connected_edges=fixed).edges()}
