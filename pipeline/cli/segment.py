"""``spheroid segment STORE``: nucleus instances for every field and time point."""

from __future__ import annotations

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
from pipeline.config.segment import SegmentConfig


@click.command()
@click.argument("store")
@config_option(SegmentConfig)
@click.option("--model", default=None, type=click.Path(file_okay=False), help="Model folder (default: the shipped U-Net).")
@click.option("--input", "input_image", default=None, help="Image to segment (raw, preprocessed...).")
@click.option("--channel", default=None, help="Channel that shows all nuclei (default Hoechst).")
@click.option("--field", "fields", multiple=True, help="Field to segment, e.g. B10/0 (repeatable; default all).")
@slice_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where the network runs.")
@overwrite_option
@workers_option
@scheduler_option
@storage_option
def segment(store, config, model, input_image, channel, fields, part, device, overwrite, workers, scheduler, storage_options):
    """Segment nuclei in STORE into labels/<output> (NGFF labels), resuming unfinished runs."""
    from pipeline.io.plate import Plate
    from pipeline.segment.runner import run_segment

    updates = {k: v for k, v in {"model": model, "input": input_image, "channel": channel, "device": device}.items() if v is not None}
    config = SegmentConfig.model_validate({**config.model_dump(), **updates})
    config = apply_cluster_overrides(config, workers, scheduler)
    plate = Plate.open(store, mode="r+", storage_options=parse_storage_options(storage_options))
    selected = fields_for(plate, fields, part)
    if selected == []:
        return
    source = config_source()
    summary = run_segment(plate, config, fields=selected, overwrite=overwrite, progress=not progress_disabled(), source=source)
    click.echo(f"segmented {summary['volumes']} volume(s) ({summary['skipped']} already done): {summary['nuclei']} nuclei in {summary['seconds']:.1f} s")
