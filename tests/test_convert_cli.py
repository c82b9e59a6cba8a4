"""``spheroid convert`` on the command line: options, and one ``error:`` line for every kind of bad input."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.io.location import Location
from pipeline.io.plate import Plate

from test_readers_pattern import write_folder


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI points the root logger at click's captured stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(*args: str):
    return CliRunner().invoke(cli, ["-q", "convert", *map(str, args)], catch_exceptions=False)


def assert_one_error(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def no_complete_store(out) -> bool:
    """Nothing at ``out`` that a later stage would take as a finished conversion."""
    if not Location(str(out)).exists():
        return True
    plate = Plate.open(str(out))
    return "convert" not in plate.records() and not any(f.is_complete() for f in plate.fields())


def test_cli_converts_folder_with_options(tmp_path, rng):
    data = write_folder(tmp_path / "raw", rng, times=2, tokens=("1", "2", "3"), name="{well}_T{t:02d}_C{c}.tif")
    out = tmp_path / "exp.zarr"
    config = tmp_path / "convert.yaml"
    config.write_text("# model: pipeline.config.convert:ConvertConfig\nchannel_map: {'1': Hoechst, '2': Cy3, '3': GFP}\n")
    options = ["--pattern", "{well}_T{t}_C{channel}.tif", "-c", config, "-w", "2", "--time-step", "600", "--voxel-size", "4", "1", "1"]
    result = run(tmp_path / "raw", "--out", out, *options)
    assert result.exit_code == 0, result.output
    assert "wrote 6 volume(s)" in result.stdout
    field = Plate.open(str(out)).field("B10")
    np.testing.assert_array_equal(field.image()[:], data["B10"])
    assert field.meta().channels == ("Hoechst", "Cy3", "GFP")
    assert field.meta().time_step == 1800  # the file's finterval wins over --time-step
    again = run(tmp_path / "raw", "--out", out, *options)
    assert again.exit_code == 0 and "wrote 0 volume(s)" in again.stdout and "6 already done" in again.stdout


def test_existing_store_needs_overwrite(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, times=1)
    Plate.create(str(tmp_path / "exp.zarr"))
    assert_one_error(run(tmp_path / "raw", "--out", tmp_path / "exp.zarr"), "exp.zarr", "--overwrite")


def _truncate(path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _corrupt_last_page(path):
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].pages[-1]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset + 2 : offset + count] = bytes(count - 2)
    path.write_bytes(bytes(raw))


BAD = {
    "truncated": ("B10_T02_GFP.tif", lambda raw: _truncate(raw / "B10_T02_GFP.tif"), "truncated"),
    "unreadable": ("B10_T01_Cyr.tif", lambda raw: (raw / "B10_T01_Cyr.tif").write_bytes(b"\0" * 64), "not a readable TIFF"),
    "shape": ("B10_T03_Hoechst.tif", lambda raw: tifffile.imwrite(raw / "B10_T03_Hoechst.tif", np.zeros((3, 16, 10), np.uint16), imagej=True, metadata={"axes": "ZYX"}), "differs from"),
    "dtype": ("B10_T02_Cyr.tif", lambda raw: tifffile.imwrite(raw / "B10_T02_Cyr.tif", np.zeros((3, 16, 12), np.uint8), imagej=True, metadata={"axes": "ZYX"}), "differs from"),
    "unknown channel": ("B10_T01_DAPI.tif", lambda raw: tifffile.imwrite(raw / "B10_T01_DAPI.tif", np.zeros((3, 16, 12), np.uint16), imagej=True, metadata={"axes": "ZYX"}), "unknown channel 'DAPI'"),
    "missing": ("well B10", lambda raw: (raw / "B10_T02_GFP.tif").unlink(), "missing file(s) for t=2 GFP"),
    "no match": ("raw", lambda raw: [p.rename(p.with_name(p.name.replace("_T", "-"))) for p in raw.iterdir()], "matches no file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folder_input(tmp_path, rng, case):
    write_folder(tmp_path / "raw", rng, times=3)
    named, damage, problem = BAD[case]
    damage(tmp_path / "raw")
    out = tmp_path / "exp.zarr"
    assert_one_error(run(tmp_path / "raw", "--out", out), named, problem)
    assert not out.exists()  # found from headers: nothing was created


def test_bad_single_files(tmp_path, rng):
    data = rng.integers(0, 65535, size=(2, 3, 2, 8, 8), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "A1.ome.tif", data, metadata={"axes": "TCZYX", "Channel": {"Name": ["Hoechst", "DAPI", "GFP"]}})
    out = tmp_path / "o.zarr"
    assert_one_error(run(tmp_path / "A1.ome.tif", "--out", out, "--channels", "Hoechst,Cy3,GFP"), "A1.ome.tif", "unknown channel name(s) DAPI")
    assert_one_error(run(tmp_path / "missing.ome.tif", "--out", out), "missing.ome.tif", "no such file")
    (tmp_path / "x.czi").write_bytes(b"x")
    assert_one_error(run(tmp_path / "x.czi", "--out", out), "x.czi", "unsupported file type")
    tifffile.imwrite(tmp_path / "A2.ome.tif", data[:, :2], metadata={"axes": "TCZYX"})
    assert_one_error(run(tmp_path / "A2.ome.tif", "--out", out, "--channels", "Hoechst,Cy3,GFP"), "A2.ome.tif", "has 2 channel(s)")
    assert_one_error(run(tmp_path / "A2.ome.tif", "--out", out, "--voxel-size", "0", "1", "1"), "command line", "voxel_size")
    assert not out.exists()


def test_corrupt_pixels_found_at_read_time(tmp_path, rng):
    data = rng.integers(0, 65535, size=(3, 2, 4, 16, 16), dtype=np.uint16)
    path = tmp_path / "B3.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "TCZYX"}, compression="zlib")
    _corrupt_last_page(path)
    out = tmp_path / "o.zarr"
    assert_one_error(run(path, "--out", out, "-w", "2"), "B3.ome.tif", "cannot read time point 2")
    assert no_complete_store(out)
    assert not Plate.open(str(out)).field("B3").done()[2, 1]  # the volume with the bad page


def test_console_script_exit_code(tmp_path):
    """The installed command, as a user runs it: exit status 1 and one error line (and its GC thresholds)."""
    code = (
        "import gc, sys\n"
        "from pipeline.cli.main import GC_THRESHOLD, main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print(gc.get_threshold() == GC_THRESHOLD)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "convert", str(tmp_path / "nothing"), "--out", str(tmp_path / "o.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nothing'}: no such file or folder"
    assert proc.stdout.strip() == "True"


@pytest.mark.parametrize("layout", ["files", "ome"])
def test_converts_synth_exports(tmp_path, layout):
    """What ``spheroid synth`` writes (the thesis' file naming, or one OME-TIFF per well) converts as is."""
    from pipeline.cli.main import COMMANDS

    if "synth" not in COMMANDS:
        pytest.skip("the synth command is not available")
    made = CliRunner().invoke(cli, ["-q", "synth", str(tmp_path / "syn"), "--timepoints", "2", "--shape", "6", "64", "64", "--wells", "B10", "--layout", layout])
    assert made.exit_code == 0, made.output
    raw = tmp_path / "syn" / "raw"
    target = raw if layout == "files" else raw / "B10.ome.tif"
    out = tmp_path / "o.zarr"
    config = Path(__file__).resolve().parents[1] / "configs" / "convert.yaml"
    result = run(target, "--out", out, "-c", config, "-w", "2")
    assert result.exit_code == 0, result.output
    field = Plate.open(str(out)).field("B10")
    assert field.is_complete() and field.image().shape == (2, 3, 6, 64, 64) and field.image().dtype == np.uint16
    meta = field.meta()
    assert meta.channels == ("Hoechst", "Cy3", "GFP") and meta.voxel_size == pytest.approx((5.0, 1.24, 1.24), rel=1e-2)
    first = tifffile.imread(raw / "B10_T02_GFP.tif") if layout == "files" else tifffile.imread(raw / "B10.ome.tif")[1, 2]
    np.testing.assert_array_equal(field.image()[1, 2], first)


def test_fresh_process_keeps_dask_config(tmp_path, rng):
    """Choosing the worker start method must not drop Dask's distributed settings (fresh interpreter)."""
    write_folder(tmp_path / "raw", rng, times=1)
    code = (
        "import sys, dask\n"
        "from pipeline.config.convert import ConvertConfig\n"
        "from pipeline.convert.run import convert\n"
        "convert([sys.argv[1]], sys.argv[2], ConvertConfig(cluster={'n_workers': 1}), progress=False)\n"
        "assert dask.config.get('distributed.comm.timeouts.connect')\n"
        "print(dask.config.get('distributed.worker.multiprocessing-method'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "raw"), str(tmp_path / "o.zarr")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "spawn"
    assert Plate.open(str(tmp_path / "o.zarr")).field("B10").is_complete()


@pytest.mark.slow
@pytest.mark.parametrize("sig,status,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_stopped_run_resumes_where_it_stopped(tmp_path, rng, sig, status, word):
    """A real ``spheroid convert`` stopped by a signal mid-run (``kill``, ``scancel``, Ctrl-C): one line,
    its exit status, no worker process left, nothing marked complete; the same command then writes
    only the volumes that were not done."""
    import psutil

    data = write_folder(tmp_path / "raw", rng, times=30, shape=(16, 256, 256))["B10"]
    out = tmp_path / "o.zarr"
    command = [sys.executable, "-c", "from pipeline.cli.main import main; main()", "-q", "convert", str(tmp_path / "raw"), "--out", str(out), "-w", "1"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a shell's background job ignores it
    )
    deadline = time.monotonic() + 120
    done = 0
    while done < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            done = int(Plate.open(str(out)).field("B10").done().sum())
        except Exception:  # the store is still being created
            pass
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert proc.poll() is None and 2 <= done < 90, "the run ended before it could be stopped"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert stderr.strip().splitlines()[-1] == f"{word}: finished volumes are kept; run the same command again to resume"
    assert "Traceback" not in stderr and "WARNING" not in stderr, stderr
    psutil.wait_procs(workers, timeout=10)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert no_complete_store(out)
    kept = int(Plate.open(str(out)).field("B10").done().sum())
    assert kept >= done

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    written, skipped = map(int, re.search(r"wrote (\d+) volume.*, (\d+) already done", again.stdout).groups())
    assert (written, skipped) == (90 - kept, kept)
    field = Plate.open(str(out)).field("B10")
    assert field.is_complete() and field.done().all()
    np.testing.assert_array_equal(field.image()[[0, 29]], data[[0, 29]])


def test_dry_run_shows_the_plan_and_writes_nothing(tmp_path, rng):
    raw = tmp_path / "raw"
    raw.mkdir()
    for t in (1, 2):
        for token in ("Hoechst", "Cyr", "GFP"):  # plain TIFFs: no voxel size or time step in them
            tifffile.imwrite(raw / f"C3_T{t:02d}_{token}.tif", rng.integers(0, 4000, size=(4, 16, 12), dtype=np.uint16), photometric="minisblack")
    out = tmp_path / "o.zarr"
    result = run(raw, "--out", out, "--dry-run", "--voxel-size", "5", "1.24", "1.24", "--time-step", "900")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{out}: would create a new plate store"
    assert lines[1].startswith("  C3/0: 2 time point(s) x 3 channel(s) x 4 x 16 x 12 uint16; channels Hoechst, Cy3, GFP;")
    assert "voxel 5 x 1.24 x 1.24 um (config); time step 900 s (config)" in lines[1] and "(6 file(s))" in lines[1]
    assert lines[2] == f"6 volume(s) to write ({6 * 4 * 16 * 12 * 2 / 1e6:.1f} MB before compression), 0 already done; nothing was written (--dry-run)"
    assert not out.exists()


def test_dry_run_of_a_store_to_resume_or_refuse(tmp_path, rng):
    write_folder(tmp_path / "raw", rng, times=3)
    out = tmp_path / "o.zarr"
    assert run(tmp_path / "raw", "--out", out, "-w", "1").exit_code == 0
    field = Plate.open(str(out), mode="r+").field("B10")
    field.plate.group[f"{field.path}/done"][1, 2] = 0  # as if the run had stopped before this volume
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    result = run(tmp_path / "raw", "--out", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"{out}: would resume the conversion in this store"
    assert "(file); time step 1800 s (file)" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("1 volume(s) to write (") and ", 8 already done;" in result.stdout
    assert "would replace the store (--overwrite)" in run(tmp_path / "raw", "--out", out, "--dry-run", "--overwrite").stdout
    assert_one_error(run(tmp_path / "raw", "--out", out, "--dry-run", "--channels", "GFP,Hoechst,Cy3"), str(out), "pass --overwrite")
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before  # nothing written
