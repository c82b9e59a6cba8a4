"""``spheroid convert INPUT... --out STORE``: raw TIFF / OME-TIFF / ND2 files to the plate store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import (
    apply_cluster_overrides,
    config_option,
    overwrite_option,
    parse_storage_options,
    progress_disabled,
    scheduler_option,
    slice_option,
    storage_option,
    workers_option,
)
from pipeline.config.base import with_overrides
from pipeline.config.convert import ConvertConfig

LOG = logging.getLogger(__name__)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, metavar="STORE", help="Plate store to write: a path, file://, memory:// or s3:// URL.")
@config_option(ConvertConfig)
@overwrite_option
@click.option("--pattern", default=None, help="File-name pattern for per-file folders, e.g. '{well}_T{t}_{channel}.tif'.")
@click.option("--channels", default=None, metavar="A,B,C", help="Channel names in store order, e.g. Hoechst,Cy3,GFP.")
@click.option("--voxel-size", type=float, nargs=3, default=None, metavar="Z Y X", help="Voxel size in um where the files lack it.")
@click.option("--time-step", type=float, default=None, metavar="S", help="Seconds between time points where the files lack it.")
@click.option("--well", default=None, help="Well of single files (instead of one guessed from the file name), e.g. B10.")
@click.option("--to-uint8", is_flag=True, default=None, help="Store 8-bit data (linear rescale, see uint8_range).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the inputs and the store as a run would and show what it would write (fields, shapes, "
    "channels, metadata and where it came from, volumes left); write nothing, start no cluster.",
)
@slice_option
@click.option(
    "--layout-only",
    is_flag=True,
    help="Create the store with every field and its empty image, write no volume: the step before a job "
    "array whose tasks convert one --slice each.",
)
@workers_option
@scheduler_option
@storage_option
def convert(
    inputs: tuple[Path, ...],
    out: str,
    config: ConvertConfig,
    overwrite: bool,
    pattern: str | None,
    channels: str | None,
    voxel_size: tuple[float, float, float] | None,
    time_step: float | None,
    well: str | None,
    to_uint8: bool | None,
    dry_run: bool,
    part,
    layout_only: bool,
    workers: int | None,
    scheduler: str | None,
    storage_options: tuple[str, ...],
) -> None:
    """Convert INPUT files and folders into the OME-Zarr plate STORE.

    INPUT: OME-TIFF or ImageJ files (any T/C/Z order), ND2 files, or folders of
    per-well, per-time-point, per-channel stacks named like B10_T01_Cyr.tif.
    16-bit data stay 16-bit. A re-run with the same inputs resumes, skipping
    volumes already written; another store at STORE needs --overwrite.
    """
    overrides: dict[str, Any] = {
        "pattern": pattern,
        "channels": [c.strip() for c in channels.split(",")] if channels else None,
        "voxel_size": list(voxel_size) if voxel_size else None,
        "time_step": time_step,
        "well": well,
        "to_uint8": True if to_uint8 else None,
    }
    config = with_overrides(config, overrides)
    config = apply_cluster_overrides(config, workers, scheduler)
    if dry_run:
        from pipeline.convert.preview import format_preview, preview

        plan = preview(list(inputs), out, config, overwrite=overwrite, storage_options=parse_storage_options(storage_options))
        for line in format_preview(plan):
            click.echo(line)
        return
    from pipeline.convert.run import convert as run_convert

    _quiet_distributed()
    summary = run_convert(
        list(inputs),
        out,
        config,
        overwrite=overwrite,
        storage_options=parse_storage_options(storage_options),
        progress=not progress_disabled(),
        part=part,
        layout_only=layout_only,
    )
    if layout_only:
        click.echo(f"{summary['store']}: layout of {len(summary['fields'])} field(s) in place ({summary['skipped']} volume(s) already done)")
        return
    if part is not None and not summary["fields"]:
        click.echo(f"slice {part}: no field to convert")
        return
    mb = summary["nbytes"] / 1e6
    click.echo(
        f"{summary['store']}: {len(summary['fields'])} field(s); wrote {summary['written']} volume(s) "
        f"({mb:.1f} MB in {summary['seconds']:.1f} s), {summary['skipped']} already done"
    )


def _quiet_distributed() -> None:
    """Importing distributed sets its loggers to INFO; keep them at WARNING like the CLI intends."""
    import distributed  # noqa: F401

    level = max(logging.getLogger().getEffectiveLevel(), logging.WARNING)
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.http.proxy"):
        logging.getLogger(name).setLevel(level)
