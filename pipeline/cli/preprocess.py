"""``spheroid preprocess`` and ``spheroid preview``: the filter chain over a store, and its before/after figure."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from pipeline.cli.options import (
    apply_cluster_overrides,
    overwrite_option,
    parse_storage_options,
    progress_disabled,
    fields_for,
    scheduler_option,
    slice_option,
    storage_option,
    workers_option,
)
from pipeline.config.base import load_config
from pipeline.config.preprocess import PreprocessConfig

LOG = logging.getLogger(__name__)

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML config (PreprocessConfig), e.g. configs/preprocess.yaml; embedded defaults when omitted.",
)


field_option = click.option("--field", "field", default=None, metavar="WELL/INDEX", help="Field to show, e.g. B10/0 (the first field by default).")


def _load(config_path: Path | None) -> tuple[PreprocessConfig, str]:
    return load_config(PreprocessConfig, config_path), str(config_path) if config_path else "<defaults>"


@click.command()
@click.argument("store")
@_config_option
@click.option("--field", "fields", multiple=True, metavar="WELL/INDEX", help="Only this field, e.g. B10/0 (repeatable); all fields by default.")
@slice_option
@overwrite_option
@workers_option
@scheduler_option
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def preprocess(store, config_path, fields, part, overwrite, workers, scheduler, storage_options, as_json) -> None:
    """Run each channel's filter chain on the raw image of STORE, writing image 'preprocessed'.

    Volumes already done are skipped (an interrupted run resumes); --overwrite recomputes.
    """
    from pipeline.io.plate import Plate
    from pipeline.preprocess.runner import run_preprocess

    config, source = _load(config_path)
    config = apply_cluster_overrides(config, workers, scheduler)
    plate = Plate.open(store, mode="r+", storage_options=parse_storage_options(storage_options))
    selected = fields_for(plate, fields, part)
    if selected == []:
        return
    summary = run_preprocess(plate, config, fields=selected, overwrite=overwrite, progress=not progress_disabled(), source=source)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"preprocessed {summary['volumes']} volume(s) in {summary['seconds']:.1f} s "
            f"({summary['skipped']} already done) -> image '{config.output}' in {len(summary['fields'])} field(s)"
        )


@click.command()
@click.argument("store")
@_config_option
@field_option
@click.option("--t", "t", type=click.IntRange(min=0), default=0, show_default=True, help="Time point.")
@click.option("--z", "z", type=click.IntRange(min=0), default=None, help="z-slice (the middle one by default).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("preview.png"), show_default=True, help="PNG to write.")
@click.option("--scale", type=click.Choice(["row", "panel"]), default="row", show_default=True, help="One colour scale per row, or per panel.")
@storage_option
def preview(store, config_path, field, t, z, out, scale, storage_options) -> None:
    """Write a PNG of one z-slice per channel of STORE, raw and after each step of the chain."""
    from pipeline.io.plate import Plate
    from pipeline.preprocess.preview import write_preview

    config, _ = _load(config_path)
    plate = Plate.open(store, storage_options=parse_storage_options(storage_options))
    fld = plate.select([field] if field else None)[0]
    if z is None:
        z = fld.image(config.input).shape[2] // 2
    path = write_preview(fld, config, t, z, out, scale=scale)
    click.echo(f"wrote {path}")
