"""``spheroid cellcycle`` and ``spheroid track``: FUCCI phase per nucleus, and tracks over time.

Both have a store form (``STORE``: every field, written as per-field Parquet tables) and
a one-off form on files (an image and a label TIFF; a label time series), written as CSV.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import (
    apply_cluster_overrides,
    config_option,
    config_source,
    overwrite_option,
    parse_storage_options,
    progress_disabled,
    fields_for,
    scheduler_option,
    slice_option,
    storage_option,
    workers_option,
)
from pipeline.config.cellcycle import CellcycleConfig, TrackConfig

voxel_option = click.option(
    "--voxel-size",
    nargs=3,
    type=float,
    default=None,
    metavar="Z Y X",
    help="Voxel size in um (one-off form); by default from the file's metadata, else 1 1 1.",
)
field_option = click.option("--field", "fields", multiple=True, metavar="WELL/INDEX", help="Only this field, e.g. B10/0 (repeatable; default all).")


def _one_off_out(out: Path | None, what: str) -> Path:
    if out is None:
        raise click.UsageError(f"the one-off form needs --out FILE.csv ({what})")
    return out


@click.command()
@click.argument("target")
@config_option(CellcycleConfig)
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="One-off form: label TIFF of TARGET (an image TIFF).")
@click.option("--channels", default=None, metavar="A,B,C", help="One-off form: names of the image's channels in order, e.g. hoechst,cy3,gfp.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="One-off form: CSV to write.")
@voxel_option
@field_option
@slice_option
@overwrite_option
@workers_option
@scheduler_option
@storage_option
def cellcycle(target, config, labels_path, channels, out, voxel_size, fields, part, overwrite, workers, scheduler, storage_options):
    """FUCCI phase (G1, G1/S, S/G2/M, early-G1) with its confidence for every nucleus.

    STORE form: `spheroid cellcycle STORE` measures every field and time point of the
    raw image under labels/nuclei on the cluster and writes tables/nuclei.parquet per
    field; an interrupted run resumes. One-off form: `spheroid cellcycle image.tif
    --labels labels.tif --channels hoechst,cy3,gfp --out nuclei.csv` (image CZYX or CYX,
    or a time series TCZYX / TCYX with (T)ZYX / (T)YX labels).
    """
    source = config_source()
    if labels_path is not None or channels is not None:
        from pipeline.cellcycle.files import cellcycle_files, parse_channels

        if labels_path is None or channels is None:
            raise click.UsageError("the one-off form needs both --labels and --channels")
        out = _one_off_out(out, "one row per nucleus")
        table = cellcycle_files(target, labels_path, parse_channels(channels), out, config, voxel_size=voxel_size, source=source)
        counts = table["phase"].value_counts().to_dict()
        click.echo(f"wrote {out}: {len(table)} nuclei ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
        return
    from pipeline.cellcycle.runner import run_cellcycle
    from pipeline.io.plate import Plate

    config = apply_cluster_overrides(config, workers, scheduler)
    plate = Plate.open(target, mode="r+", storage_options=parse_storage_options(storage_options))
    selected = fields_for(plate, fields, part)
    if selected == []:
        return
    summary = run_cellcycle(plate, config, fields=selected, overwrite=overwrite, progress=not progress_disabled(), source=source)
    click.echo(
        f"measured {summary['volumes']} time point(s) ({summary['skipped']} already done): "
        f"{summary['nuclei']} nuclei ({summary['dead']} dead) in {summary['seconds']:.1f} s"
    )


@click.command()
@click.argument("target")
@config_option(TrackConfig)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="One-off form: CSV to write (t, label, track_id, parent_track_id).")
@voxel_option
@field_option
@slice_option
@overwrite_option
@storage_option
def track(target, config, out, voxel_size, fields, part, overwrite, storage_options):
    """Link nuclei over time (divisions, gaps, appearances) and write track ids.

    STORE form: `spheroid track STORE` reads each field's tables/nuclei.parquet (from
    `spheroid cellcycle`), writes track_id / parent_track_id into it and one row per track
    (phase sequence, hours per phase) to tables/tracks.parquet. One-off form:
    `spheroid track labels.tif --voxel-size Z Y X --out tracks.csv` on a TZYX (or TYX)
    label time series whose ids need not agree between frames. Fields already tracked with
    the same settings are skipped (an interrupted run resumes); other settings are refused
    unless --overwrite.
    """
    if out is not None:
        from pipeline.cellcycle.files import track_file

        table = track_file(target, out, config, voxel_size=voxel_size)
        children = table.loc[table["parent_track_id"] > 0, "parent_track_id"]
        click.echo(f"wrote {out}: {len(table)} nuclei in {table['track_id'].nunique()} tracks, {children.nunique()} divisions")
        return
    from pipeline.cellcycle.runner import run_track
    from pipeline.io.plate import Plate

    plate = Plate.open(target, mode="r+", storage_options=parse_storage_options(storage_options))
    selected = fields_for(plate, fields, part)
    if selected == []:
        return
    summary = run_track(plate, config, fields=selected, overwrite=overwrite, progress=not progress_disabled())
    done = f", {len(summary['skipped'])} already done" if summary["skipped"] else ""
    click.echo(
        f"tracked {len(summary['fields'])} field(s){done}: {summary['nuclei']} nuclei in {summary['tracks']} tracks, "
        f"{summary['divisions']} divisions ({summary['seconds']:.1f} s)"
    )
