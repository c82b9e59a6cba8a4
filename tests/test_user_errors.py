"""The regression table of user errors (issue 17): every case, run as a real ``spheroid`` process,
ends with exit status 1 and exactly one line on stderr, no traceback, the file or key named,
and no volume marked done that holds wrong data.

Each case builds its inputs in a fresh folder from one small synthetic experiment, runs the
command a user would, and then checks the store(s) it touched: the volumes marked done are
exactly those that were done before (nothing was half-written and taken as finished), unless
the case says otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile

from pipeline.io.plate import Plate
from pipeline.io.verify import images_of

pytestmark = pytest.mark.slow

SPHEROID = [sys.executable, "-c", "from pipeline.cli.main import main; main()"]


def spheroid(*args, cwd: Path, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``spheroid ARGS`` as a user would, in ``cwd``."""
    return subprocess.run(
        [*SPHEROID, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def snapshot(store: Path) -> dict[str, tuple[int, int]]:
    """Every file of a store with its size and modification time."""
    return {str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*") if p.is_file()} if store.exists() else {}


def done_volumes(store: Path) -> dict[str, set]:
    """``{image: {(field, t, c), ...}}`` of every volume marked done in a store (empty if none)."""
    out: dict[str, set] = {}
    try:
        plate = Plate.open(str(store))
        fields = plate.fields()
    except Exception:  # noqa: BLE001 - a damaged store is what some cases make
        return out
    for fld in fields:
        for name, is_label in images_of(fld):
            key = f"labels/{name}" if is_label else name
            out.setdefault(key, set()).update((str(fld), int(t), int(c)) for t, c in np.argwhere(fld.done(name, label=is_label)))
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A small synthetic experiment (2 time points, 3 channels, 8 x 64 x 64) and its store."""
    root = tmp_path_factory.mktemp("experiment")
    assert spheroid("-q", "synth", "d", "--timepoints", "2", "--shape", "8", "64", "64", cwd=root).returncode == 0
    assert spheroid("-q", "convert", "d/raw", "--out", "s.zarr", "-w", "1", cwd=root).returncode == 0
    return root


@dataclass
class Case:
    """One row of the table: set-up in a fresh folder, the command, what the line must name."""

    name: str
    setup: Callable[[Path], None]
    command: tuple
    named: tuple[str, ...]
    stores: tuple[str, ...] = ("s.zarr",)
    """Stores the failed command must leave exactly as they were (every file, size and time)."""
    env: dict = field(default_factory=dict)
    damaged: tuple[int, int] | None = None
    """For a damaged raw volume ``(t, c)``: the command may finish the other volumes, which must
    equal an undisturbed run's, but never marks the damaged one's output done."""


# -- set-ups --------------------------------------------------------------------------------------
def nothing(root: Path) -> None:
    pass


def truncated_imagej_labels(root: Path) -> None:
    labels = np.zeros((12, 128, 128), np.uint16)
    rng = np.random.default_rng(0)
    for i in range(258):
        z, y, x = rng.integers(0, 12), rng.integers(0, 124), rng.integers(0, 124)
        labels[z, y : y + 4, x : x + 4] = i + 1
    tifffile.imwrite(root / "full.tif", labels, imagej=True)
    data = (root / "full.tif").read_bytes()
    (root / "t.tif").write_bytes(data[: int(len(data) * 0.6)])  # as Fiji leaves a file cut short


def segmented_from_raw(root: Path) -> None:
    assert spheroid("-q", "preprocess", "s.zarr", "-w", "1", cwd=root).returncode == 0
    assert spheroid("-q", "segment", "s.zarr", "-w", "1", cwd=root).returncode == 0


def chunk_of(root: Path, t: int = 1, c: int = 0) -> Path:
    return next(p for p in sorted((root / f"s.zarr/B/10/0/0/c/{t}/{c}").rglob("*")) if p.is_file())


def delete_a_raw_chunk(root: Path) -> None:
    chunk_of(root).unlink()


def flip_a_byte_in_a_raw_chunk(root: Path) -> None:
    path = chunk_of(root)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def preprocessed_without_its_normalization(root: Path) -> None:
    """A derived image whose per-volume map array is gone: a worker's zarr 'not found'."""
    assert spheroid("-q", "preprocess", "s.zarr", "-w", "1", cwd=root).returncode == 0
    shutil.rmtree(root / "s.zarr/B/10/0/preprocessed/normalization")


def latin1_config(root: Path) -> None:
    (root / "bad.yaml").write_bytes("# voxel size in µm\nn_workers: 1\n".encode("latin-1"))


def duplicate_key(root: Path) -> None:
    (root / "dup.yaml").write_text("compression_level: 3\ncompression_level: 4\n")


def empty_root_metadata(root: Path) -> None:
    (root / "s.zarr/zarr.json").write_text("")


def empty_image_metadata(root: Path) -> None:
    (root / "s.zarr/B/10/0/0/zarr.json").write_text("")


def deleted_image_metadata(root: Path) -> None:
    (root / "s.zarr/B/10/0/zarr.json").unlink()


def malformed_plate(root: Path) -> None:
    import json

    doc = json.loads((root / "s.zarr/zarr.json").read_text())
    doc["attributes"]["ome"]["plate"]["wells"] = "B10"
    (root / "s.zarr/zarr.json").write_text(json.dumps(doc))


def float64_store(root: Path) -> None:
    data = np.random.default_rng(1).random((1, 2, 3, 16, 16))
    tifffile.imwrite(root / "f.tif", data, photometric="minisblack", metadata={"axes": "TCZYX"})
    assert spheroid("-q", "convert", "f.tif", "--out", "f.zarr", "--channels", "a,b", "--voxel-size", "1", "1", "1", "--time-step", "1", cwd=root).returncode == 0


def single_channel_store(root: Path) -> None:
    tifffile.imwrite(root / "one.tif", np.zeros((4, 32, 32), np.uint16), photometric="minisblack")
    assert spheroid("-q", "convert", "one.tif", "--out", "one.zarr", "--voxel-size", "5", "1.24", "1.24", "--time-step", "1", cwd=root).returncode == 0


CASES = [
    Case("groundtruth: truncated ImageJ labels", truncated_imagej_labels, ("groundtruth", "--labels", "t.tif", "--out", "gt"), ("t.tif", "truncated"), stores=()),
    Case("segment: rerun with another input", segmented_from_raw, ("segment", "s.zarr", "--input", "preprocessed", "-w", "1"), ("labels/nuclei", "other settings", "--overwrite")),
    Case("preprocess: a raw chunk deleted", delete_a_raw_chunk, ("preprocess", "s.zarr", "-w", "1"), ("t=1 c=0", "is missing", "spheroid verify"), stores=(), damaged=(1, 0)),
    Case("preprocess: a flipped byte in a raw chunk", flip_a_byte_in_a_raw_chunk, ("preprocess", "s.zarr", "-w", "1"), ("t=1 c=0", "checksum"), stores=(), damaged=(1, 0)),
    Case("verify: a damaged volume", delete_a_raw_chunk, ("verify", "s.zarr"), ("1 damaged volume", "s.zarr")),
    Case("info: unreachable S3 endpoint", nothing, ("info", "s3://bucket/x.zarr", "--storage-option", "endpoint_url=http://127.0.0.1:9"), ("s3://bucket/x.zarr", "cannot reach"),
         stores=(), env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1"}),
    Case("segment: a worker's 'no such array'", preprocessed_without_its_normalization, ("segment", "s.zarr", "--input", "preprocessed", "-w", "1"), ("normalization", "no such array")),
    Case("convert -c: config not UTF-8", latin1_config, ("convert", "d/raw", "--out", "n.zarr", "-c", "bad.yaml"), ("bad.yaml", "line 1", "UTF-8")),
    Case("--cluster: config not UTF-8", latin1_config, ("--cluster", "bad.yaml", "info", "s.zarr"), ("bad.yaml", "UTF-8")),
    Case("convert -c: a key given twice", duplicate_key, ("convert", "d/raw", "--out", "n.zarr", "-c", "dup.yaml"), ("dup.yaml", "line 2", "compression_level", "twice")),
    Case("info: empty root zarr.json", empty_root_metadata, ("info", "s.zarr"), ("s.zarr/zarr.json", "damaged")),
    Case("preprocess: empty zarr.json of the raw array", empty_image_metadata, ("preprocess", "s.zarr", "-w", "1"), ("B/10/0/0/zarr.json", "damaged")),
    Case("preprocess: zarr.json of a field deleted", deleted_image_metadata, ("preprocess", "s.zarr", "-w", "1"), ("s.zarr/B/10/0",)),
    Case("info: pointed at an array", nothing, ("info", "s.zarr/B/10/0/0"), ("s.zarr/B/10/0/0", "is an array")),
    Case("info: malformed plate metadata", malformed_plate, ("info", "s.zarr"), ("s.zarr/zarr.json", "malformed plate metadata")),
    Case("preview: unknown image format", nothing, ("preview", "s.zarr", "--out", "p.jpg2"), ("p.jpg2", "unsupported image format")),
    Case("preview: unwritable --out", nothing, ("preview", "s.zarr", "--out", "/proc/spheroid/p.png"), ("/proc/spheroid",)),
    Case("preview: a float64 store", float64_store, ("preview", "f.zarr"), ("f.zarr", "float64", "uint8 or uint16"), stores=("f.zarr",)),
    Case("convert: --out where no store can be made", nothing, ("convert", "d/raw", "--out", "/proc/x.zarr"), ("/proc/x.zarr", "cannot create"), stores=()),
    Case("model-card: no such model folder", nothing, ("model-card", "nomodel"), ("nomodel", "model folder not found"), stores=()),
    Case("test-model: no such model folder", nothing, ("test-model", "nomodel", "--trainset", "ts"), ("nomodel", "model folder not found"), stores=()),
    Case("tune-labeling: no such model folder", nothing, ("tune-labeling", "nomodel", "--trainset", "ts"), ("nomodel", "model folder not found"), stores=()),
    Case("segment: no nuclear channel, no config", single_channel_store, ("segment", "one.zarr", "-w", "1"), ("one.zarr", "no channel 'Hoechst'", "--channel"), stores=("one.zarr",)),
]


@pytest.fixture(scope="module")
def preprocessed(experiment, tmp_path_factory) -> Path:
    """The experiment preprocessed undisturbed: what every finished volume must hold."""
    root = tmp_path_factory.mktemp("reference")
    shutil.copytree(experiment / "s.zarr", root / "s.zarr")
    assert spheroid("-q", "preprocess", "s.zarr", "-w", "1", cwd=root).returncode == 0
    return root / "s.zarr"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_user_error_is_one_line_and_leaves_no_wrong_data(experiment, preprocessed, tmp_path, case):
    root = tmp_path / "case"
    shutil.copytree(experiment, root)
    case.setup(root)
    before = {store: snapshot(root / store) for store in case.stores}
    result = spheroid(*case.command, cwd=root, env=case.env)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in case.named:
        assert fragment in lines[0], lines[0]
    for store in case.stores:
        assert snapshot(root / store) == before[store], f"{store}: changed by a command that failed"
    if case.damaged is not None:
        done = done_volumes(root / "s.zarr").get("preprocessed", set())
        assert ("B10/0", *case.damaged) not in done
        field = Plate.open(str(root / "s.zarr")).field("B10")
        reference = Plate.open(str(preprocessed)).field("B10").image("preprocessed")
        for _, t, c in done:
            np.testing.assert_array_equal(field.image("preprocessed")[t, c], reference[t, c])


def test_convert_overwrite_replaces_a_store_with_damaged_root_metadata(experiment, tmp_path):
    root = tmp_path / "case"
    shutil.copytree(experiment, root)
    empty_root_metadata(root)
    result = spheroid("-q", "convert", "d/raw", "--out", "s.zarr", "--overwrite", "-w", "1", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Plate.open(str(root / "s.zarr")).field("B10").is_complete()


def test_float_tiff_with_nan_converts(tmp_path):
    """A NaN in a float volume is not a read-back difference (equal_nan)."""
    data = np.random.default_rng(2).random((1, 1, 3, 16, 16)).astype(np.float32)
    data[0, 0, 1, 2, 3] = np.nan
    tifffile.imwrite(tmp_path / "B2.tif", data, photometric="minisblack", metadata={"axes": "TCZYX"})
    result = spheroid("-q", "convert", "B2.tif", "--out", "n.zarr", "--channels", "a", "--voxel-size", "1", "1", "1", "--time-step", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "float32 pixels are stored as float32" in result.stderr  # later stages take integers: said at convert time
    np.testing.assert_array_equal(Plate.open(str(tmp_path / "n.zarr")).field("B2").image()[:], data)


def test_full_disk_is_one_line_and_marks_nothing_wrong(experiment, tmp_path):
    """The store on a 160 kB file system: the chunk writer's ENOSPC names the file; the volumes
    marked done before the disk filled hold exactly the source data."""
    disk = tmp_path / "tiny"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        result = spheroid("-q", "convert", experiment / "d/raw", "--out", disk / "s.zarr", "-w", "1", cwd=tmp_path)
        assert result.returncode == 1, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0] and str(disk) in lines[0], result.stderr[-2000:]
        reference = Plate.open(str(experiment / "s.zarr")).field("B10").image()
        for _, t, c in done_volumes(disk / "s.zarr").get("raw", set()):
            np.testing.assert_array_equal(Plate.open(str(disk / "s.zarr")).field("B10").image()[t, c], reference[t, c])
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize("sig,count,status,word", [(signal.SIGINT, 3, 130, "interrupted"), (signal.SIGTERM, 2, 143, "terminated")])
def test_stopping_the_process_group_prints_one_line(tmp_path, sig, count, status, word):
    """Ctrl-C in a terminal (and ``scancel``) signals every process of the run: the workers
    stay quiet and the client's one line is all that is printed, even for repeated signals."""
    assert spheroid("-q", "synth", "d", "--timepoints", "12", "--shape", "16", "192", "192", cwd=tmp_path).returncode == 0
    assert spheroid("-q", "convert", "d/raw", "--out", "s.zarr", cwd=tmp_path).returncode == 0
    proc = subprocess.Popen(
        [*SPHEROID, "-q", "preprocess", "s.zarr", "-w", "2"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if Plate.open(str(tmp_path / "s.zarr")).field("B10").done("preprocessed").sum() >= 1:
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    for _ in range(count):
        os.killpg(proc.pid, sig)
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr[-3000:]
    assert stderr.strip().splitlines() == [f"{word}: finished volumes are kept; run the same command again to resume"], stderr[-3000:]


def test_synth_killed_then_rerun(tmp_path):
    """A ``synth`` killed with SIGKILL leaves only its temporary folder, which the rerun removes."""
    proc = subprocess.Popen([*SPHEROID, "-q", "synth", "out", "--timepoints", "40", "--shape", "21", "256", "256"], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((tmp_path / "out").glob(".synth-*/raw/*")):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert [p.name[:7] for p in (tmp_path / "out").iterdir()] == [".synth-"]
    result = spheroid("-q", "synth", "out", "--timepoints", "1", "--shape", "4", "32", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["raw", "synth.yaml", "truth"]
