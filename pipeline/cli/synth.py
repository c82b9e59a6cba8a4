"""``spheroid synth OUT_DIR``: synthetic FUCCI spheroid time-lapses with ground truth."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import click

from pipeline.cli.options import config_option, overwrite_option, progress_disabled
from pipeline.config.base import with_overrides
from pipeline.config.synth import SynthConfig
from pipeline.errors import StoreError

LOG = logging.getLogger(__name__)

OUTPUTS = ("raw", "truth", "synth.yaml")
"""What ``synth`` writes into OUT_DIR (and what ``--overwrite`` replaces)."""
TEMP_PREFIX = ".synth-"
"""A run writes into ``OUT_DIR/.synth-<pid>-*`` and moves the outputs into place at the end."""


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete the temporary folders of earlier runs that were killed (their process is gone)."""
    import psutil

    if not out_dir.is_dir():
        return
    for entry in out_dir.glob(f"{TEMP_PREFIX}*"):
        pid = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if entry.is_dir() and not (pid.isdigit() and psutil.pid_exists(int(pid)) and int(pid) != os.getpid()):
            LOG.info("removing %s, left by an interrupted run", entry)
            shutil.rmtree(entry, ignore_errors=True)


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@config_option(SynthConfig)
@click.option("--timepoints", type=click.IntRange(min=1), default=None, help="Number of time points (n_timepoints).")
@click.option("--shape", type=(click.IntRange(min=1), click.IntRange(min=1), click.IntRange(min=1)), default=None, metavar="Z Y X", help="Stack shape in voxels.")
@click.option("--wells", default=None, metavar="B10,B11", help="Comma-separated wells, one spheroid each.")
@click.option("--layout", type=click.Choice(["files", "ome"]), default="files", show_default=True, help="One ImageJ TIFF per time point and channel, or one OME-TIFF per well.")
@click.option("--compression", type=click.Choice(["none", "zlib"]), default="zlib", show_default=True, help="TIFF compression.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed (overrides the config).")
@overwrite_option
def synth(
    out_dir: Path,
    config: SynthConfig,
    timepoints: int | None,
    shape: tuple[int, int, int] | None,
    wells: str | None,
    layout: str,
    compression: str,
    seed: int | None,
    overwrite: bool,
) -> None:
    """Write synthetic FUCCI spheroid z-stacks (Hoechst, Cy3, GFP) with labels and a truth table.

    OUT_DIR gets raw/ (what a microscope export looks like), truth/ (instance
    labels and a per-nucleus table of phases and track ids) and synth.yaml.
    """
    from pipeline.synth import generate, write_export

    config = apply_overrides(config, timepoints=timepoints, shape=shape, wells=wells, seed=seed)
    remove_stale_temporaries(out_dir)
    check_out_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=out_dir) as tmp:
        for well in config.wells:
            result = generate(config, well=well, progress=not progress_disabled())
            write_export(result, tmp, layout=layout, compression=None if compression == "none" else compression)
            n_div = int((result.table.drop_duplicates("track_id")["parent_track_id"] > 0).sum())
            LOG.info(
                "well %s: %d nuclei at t=0, %d at the end, %d daughters",
                well,
                int((result.table["t"] == 0).sum()),
                int((result.table["t"] == result.images.shape[0] - 1).sum()),
                n_div,
            )
        for name in OUTPUTS:  # move into place only once everything is written
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(Path(tmp) / name), target)
    click.echo(f"wrote {len(config.wells)} well(s) x {config.n_timepoints} time point(s) to {out_dir}")


def apply_overrides(config: SynthConfig, *, timepoints=None, shape=None, wells=None, seed=None) -> SynthConfig:
    """Return ``config`` with the command-line values applied (``None`` leaves a value unchanged).

    Raises
    ------
    ConfigError
        If a value is invalid (named as the option).
    """
    update: dict = {}
    if timepoints is not None:
        update["n_timepoints"] = timepoints
    if shape is not None:
        update["shape"] = tuple(shape)
    if wells is not None:
        update["wells"] = [w.strip() for w in wells.split(",") if w.strip()]
    if seed is not None:
        update["seed"] = seed
    if not update:
        return config
    return with_overrides(config, update, "command-line options")


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless ``overwrite``; refuse a file in its place.

    Raises
    ------
    StoreError
        If OUT_DIR is a file, or is not empty and ``overwrite`` is false.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise StoreError(f"{out_dir}: folder is not empty; use --overwrite to replace raw/, truth/ and synth.yaml in it")
