"""``spheroid segment STORE`` (every field and time point) or ``spheroid segment FILE.tif --out labels.tif``."""

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
    tta_option,
    workers_option,
)
from pipeline.config.base import with_overrides
from pipeline.config.segment import SegmentConfig

TIFF_ENDINGS = (".tif", ".tiff")


class DiameterType(click.ParamType):
    """``--diameter``: one value in um, or three (z, y, x) separated by commas."""

    name = "diameter"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float, list)):
            return value
        try:
            values = [float(v) for v in str(value).replace("x", ",").split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a diameter: give one number (um) or three, Z,Y,X", param, ctx)
        if len(values) not in (1, 3) or any(not v > 0 for v in values):
            self.fail(f"{value!r}: give one positive diameter (um) or three, Z,Y,X", param, ctx)
        return values[0] if len(values) == 1 else values


def _channel(value: str | None):
    """``--channel``: a name, an index, or a comma-separated combination."""
    if value is None:
        return None
    from pipeline.segment.inputs import parse_channel

    parts = [parse_channel(p) for p in value.split(",") if p.strip()]
    return parts if len(parts) > 1 else parts[0]


@click.command()
@click.argument("target")
@config_option(SegmentConfig)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="With a TIFF: the label TIFF to write (uint32, same ZYX shape).")
@click.option("--backend", type=click.Choice(["unet", "stardist", "cellpose"]), default=None, help="Segmentation backend (default unet).")
@click.option("--model", default=None, type=click.Path(file_okay=False), help="Model folder (default: the shipped U-Net; required for stardist, cellpose).")
@click.option("--input", "input_image", default=None, help="Store: image to segment (raw, preprocessed...).")
@click.option("--channel", default=None, help="Nuclear channel: name or 0-based index; 'A,B,C' combines channels (default Hoechst).")
@click.option("--voxel-size", nargs=3, type=click.FloatRange(min=0, min_open=True), default=None, metavar="Z Y X", help="Voxel size in um where the data states none.")
@click.option("--diameter", type=DiameterType(), default=None, metavar="UM|Z,Y,X", help="Typical nucleus diameter in um, or per axis Z,Y,X for nuclei drawn out in z (default: the model's).")
@click.option("--normalize", type=click.Choice(["series", "volume"]), default=None, help="Store: percentiles over each field's time series (default) or per volume.")
@click.option("--field", "fields", multiple=True, help="Store: field to segment, e.g. B10/0 (repeatable; default all).")
@slice_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where the network runs.")
@tta_option()
@overwrite_option
@workers_option
@scheduler_option
@storage_option
def segment(target, config, out, backend, model, input_image, channel, voxel_size, diameter, normalize, fields, part, device, tta, overwrite, workers, scheduler, storage_options):
    """Segment nuclei: in a STORE into labels/<output> (NGFF labels, resumable), or in one TIFF volume.

    TARGET is a store (every field and time point) or a TIFF holding one ZYX volume (or CZYX
    with --channel); with a TIFF, --out names the uint32 label TIFF. Volumes are resampled to
    the model's voxel size and nucleus size, and large ones are segmented in blocks.
    """
    from pipeline.errors import InputError

    updates = {
        "backend": backend, "model": model, "input": input_image, "channel": _channel(channel), "device": device,
        "voxel_size": list(voxel_size) if voxel_size else None, "diameter": diameter, "normalize": normalize,
        "tta": int(tta) if tta else None,
    }
    config = with_overrides(config, updates)
    if target.lower().endswith(TIFF_ENDINGS):
        from pipeline.segment.tiff import segment_file

        if out is None:
            raise InputError(f"{target}: a TIFF is segmented into a label TIFF; pass --out labels.tif")
        if fields or input_image or part:
            raise InputError("--field, --slice and --input apply to a store, not to a TIFF")
        result = segment_file(target, out, config, overwrite=overwrite, progress=not progress_disabled())
        click.echo(f"segmented {target}: {result['nuclei']} nuclei in {result['seconds']:.1f} s -> {out}")
        return
    if out is not None:
        raise InputError("--out applies to a TIFF; a store's labels go to labels/<output> inside it")
    from pipeline.io.plate import Plate
    from pipeline.segment.runner import run_segment

    config = apply_cluster_overrides(config, workers, scheduler)
    plate = Plate.open(target, mode="r+", storage_options=parse_storage_options(storage_options))
    selected = fields_for(plate, fields, part)
    if selected == []:
        return
    source = config_source()
    summary = run_segment(plate, config, fields=selected, overwrite=overwrite, progress=not progress_disabled(), source=source)
    click.echo(f"segmented {summary['volumes']} volume(s) ({summary['skipped']} already done): {summary['nuclei']} nuclei in {summary['seconds']:.1f} s")
