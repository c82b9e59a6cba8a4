"""Job-array slices (``--slice I/N``): every field in exactly one part, parts in plate order, the
store laid out once and filled by parts whose union equals a whole run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.errors import ConfigError
from pipeline.io.plate import Plate
from pipeline.slices import Slice


@pytest.mark.parametrize("n", [0, 1, 5, 8, 96])
@pytest.mark.parametrize("count", [1, 3, 8])
def test_parts_cover_every_item_once_in_order_and_differ_by_at_most_one(n, count):
    items = list(range(n))
    parts = [Slice(i, count).take(items) for i in range(count)]
    assert [x for p in parts for x in p] == items
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text,expected", [("0/1", (0, 1)), ("3/8", (3, 8)), (" 2 / 4 ", (2, 4))])
def test_parse(text, expected):
    part = Slice.parse(text)
    assert (part.index, part.count) == expected and str(part) == f"{expected[0]}/{expected[1]}"


@pytest.mark.parametrize("text", ["4/4", "1", "a/b", "-1/3", "1/0"])
def test_bad_slices_are_refused(text):
    with pytest.raises(ConfigError, match="--slice"):
        Slice.parse(text)


def test_slice_from_a_slurm_array_task():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert Slice.parse("slurm", env) == Slice(4, 8)
    with pytest.raises(ConfigError, match="not a SLURM job-array task"):
        Slice.parse("slurm", {})
    with pytest.raises(ConfigError, match="contiguous"):
        Slice.parse("slurm", {**env, "SLURM_ARRAY_TASK_COUNT": "4"})


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    result = CliRunner().invoke(cli, ["-q", "synth", str(root / "d"), "--timepoints", "2", "--shape", "6", "48", "48", "--wells", "B2,B3,C4"])
    assert result.exit_code == 0, result.output
    return root / "d/raw"


def test_convert_layout_then_slices_equal_a_whole_run(raw, tmp_path, monkeypatch):
    """--layout-only makes every field with nothing done; the parts then fill it, each only its
    own fields, and the union equals one whole conversion."""
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    assert run(cli, ["-q", "convert", str(raw), "--out", "whole.zarr", "-w", "1"]).exit_code == 0
    refused = run(cli, ["-q", "convert", str(raw), "--out", "s.zarr", "--slice", "0/2"])
    assert refused.exit_code == 1 and "--layout-only" in refused.output
    assert run(cli, ["-q", "convert", str(raw), "--out", "s.zarr", "--layout-only"]).exit_code == 0
    plate = Plate.open("s.zarr")
    assert [str(f) for f in plate.fields()] == ["B2/0", "B3/0", "C4/0"]
    assert not any(f.done("raw").any() for f in plate.fields())
    first = run(cli, ["-q", "convert", str(raw), "--out", "s.zarr", "--slice", "0/2", "-w", "1"])
    assert first.exit_code == 0, first.output
    assert [f.is_complete("raw") for f in Plate.open("s.zarr").fields()] == [True, True, False]
    assert run(cli, ["-q", "convert", str(raw), "--out", "s.zarr", "--slice", "1/2", "-w", "1"]).exit_code == 0
    empty = run(cli, ["-q", "convert", str(raw), "--out", "s.zarr", "--slice", "3/4"])
    assert empty.exit_code == 0 and "no field" in empty.output
    for a, b in zip(Plate.open("whole.zarr").fields(), Plate.open("s.zarr").fields()):
        assert b.is_complete("raw")
        np.testing.assert_array_equal(a.image()[:], b.image()[:])


@pytest.mark.slow
def test_stage_slices_take_the_fields_in_plate_order(raw, tmp_path, monkeypatch):
    """preprocess --slice: part 0 of 2 does the first two fields only, part 1 the last; a part
    with no field does nothing and says so."""
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    assert run(cli, ["-q", "convert", str(raw), "--out", "s.zarr", "-w", "1"]).exit_code == 0
    shutil.copytree("s.zarr", "whole.zarr")
    assert run(cli, ["-q", "preprocess", "whole.zarr", "-w", "1"]).exit_code == 0
    result = run(cli, ["-q", "preprocess", "s.zarr", "--slice", "0/2", "-w", "1"])
    assert result.exit_code == 0, result.output
    assert [f.has_image("preprocessed") and f.is_complete("preprocessed") for f in Plate.open("s.zarr").fields()] == [True, True, False]
    empty = run(cli, ["-q", "preprocess", "s.zarr", "--slice", "5/6"])
    assert empty.exit_code == 0 and "slice 5/6: no field to process (the plate has 3)" in empty.output
    assert run(cli, ["-q", "preprocess", "s.zarr", "--slice", "1/2", "-w", "1"]).exit_code == 0
    for a, b in zip(Plate.open("whole.zarr").fields(), Plate.open("s.zarr").fields()):
        np.testing.assert_array_equal(a.image("preprocessed")[:], b.image("preprocessed")[:])
