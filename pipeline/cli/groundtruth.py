"""Ground-truth commands: ``groundtruth``, ``export-corrections``, ``import-corrections``, ``trainset ...``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from pipeline.cli.options import config_option, overwrite_option, parse_storage_options, progress_disabled, storage_option
from pipeline.config.groundtruth import GroundTruthConfig

LOG = logging.getLogger(__name__)

_SOURCES = ("cellpose", "hand-corrected", "synthetic")
_SPLITS = click.Choice(["train", "val", "test"])

item_id_option = click.option("--id", "item_id", default=None, help="Item id in the training set (default: what the image and label file names share, else the image's name; made unique in the set).")
split_option = click.option("--split", type=_SPLITS, default=None, help="Training-set split (default: train).")
replace_option = click.option("--replace", is_flag=True, help="Replace training-set items with the same id.")
voxel_option = click.option("--voxel-size", nargs=3, type=click.FloatRange(min=0, min_open=True), default=None, metavar="Z Y X", help="Voxel size in um when the TIFF does not state it.")


def _source(value: str) -> str:
    if value in _SOURCES or value.startswith("real:"):
        return value
    raise click.BadParameter(f"{value!r}: expected cellpose, hand-corrected, synthetic or real:<dataset>", param_hint="--source")


@click.command()
@click.option("--labels", "labels", required=True, type=click.Path(path_type=Path), help="Instance (or binary) mask TIFF, ZYX or TZYX.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder: semantic.tif, instances.tif, groundtruth.json.")
@config_option(GroundTruthConfig)
@overwrite_option
@click.option("--add-to", "add_to", type=click.Path(file_okay=False, path_type=Path), default=None, help="Also add the result to this training set (created if missing).")
@click.option("--image", "image", type=click.Path(path_type=Path), default=None, help="With --add-to: the image the masks belong to.")
@click.option("--source", default="cellpose", show_default=True, callback=lambda c, p, v: _source(v), help="With --add-to: cellpose, hand-corrected, synthetic or real:<dataset>.")
@click.option("--channel", default="Hoechst", show_default=True, help="With --add-to: the channel the image shows.")
@item_id_option
@split_option
@replace_option
@voxel_option
def groundtruth(labels, out, config, overwrite, add_to, image, source, channel, item_id, split, replace, voxel_size):
    """Clean instance masks and write the 3-class target (0 background, 1 edge, 2 nucleus).

    Writes OUT/semantic.tif (uint8), OUT/instances.tif (cleaned instances, same shape) and
    OUT/groundtruth.json (class balance, parameters, provenance).
    """
    from pipeline.errors import InputError
    from pipeline.groundtruth.files import add_files_to_trainset, finished_report, groundtruth_files, same_inputs
    from pipeline.groundtruth.trainset import format_balance

    if add_to is not None and image is None:
        raise InputError("--add-to needs --image (the image the masks belong to)")
    if image is not None and add_to is None:
        raise InputError("--image is only used with --add-to TRAINSET")
    previous = finished_report(out)
    if previous is not None and not overwrite and not same_inputs(previous, labels, config):
        raise InputError(f"{out}: holds ground truth made from another input or with other parameters; pass --overwrite to replace it")
    entries = []
    if add_to is not None:  # checks image, ids and voxel size before anything is written
        entries = add_files_to_trainset(
            add_to, image, labels, config, item_id=item_id, source=source, split=split or "train",
            channel=channel, voxel_size=voxel_size, replace=replace, progress=not progress_disabled(),
        )
    report = groundtruth_files(labels, out, config, overwrite=overwrite, progress=not progress_disabled())
    click.echo(f"class balance: {format_balance(report['class_balance'])}")
    if entries:
        click.echo(f"added {', '.join(e['id'] for e in entries)} to {add_to}")


@click.command("export-corrections")
@click.argument("store")
@click.option("--field", "field_spec", required=True, help="Field as WELL/INDEX, e.g. B10/0.")
@click.option("--t", "t", required=True, type=click.IntRange(min=0), help="Time point (0-based).")
@click.option("--channel", default=None, help="Channel to export (default: Hoechst, else the first).")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None, help="Predicted labels TIFF instead of the store's labels/nuclei.")
@click.option("--label-name", default=None, help="Label image of the store to export (default: corrections.labels, 'nuclei').")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for image.tif, labels.tif, correction.json, README.txt.")
@config_option(GroundTruthConfig)
@overwrite_option
@storage_option
def export_corrections(store, field_spec, t, channel, labels_file, label_name, out, config, overwrite, storage_options):
    """Write one volume's image and predicted labels for correction in Labkit (Fiji) or napari."""
    from pipeline.groundtruth.corrections import export_corrections as export
    from pipeline.io.plate import parse_field
    from pipeline.groundtruth.prepare import check_labels
    from pipeline.groundtruth.tiffio import read_tiff
    from pipeline.io.plate import Plate

    updates = {k: v for k, v in {"channel": channel, "labels": label_name}.items() if v is not None}
    corrections = config.corrections.model_copy(update=updates)
    well, index = parse_field(field_spec)
    plate = Plate.open(store, storage_options=parse_storage_options(storage_options))
    field = plate.field(well, index)
    labels = None
    if labels_file is not None:
        labels = check_labels(read_tiff(labels_file, min_ndim=3)[0], str(labels_file))
    sidecar = export(plate, field, t, out, config=corrections, labels=labels, labels_file=str(labels_file) if labels_file else None, overwrite=overwrite)
    click.echo(f"exported {sidecar['field']} t={sidecar['t']} {sidecar['channel']} ({sidecar['image_source']}, {sidecar['n_labels']} labels) to {out}; see {out / 'README.txt'}")


@click.command("import-corrections")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--trainset", "trainset_path", required=True, type=click.Path(file_okay=False, path_type=Path), help="Training set to add the correction to (created if missing).")
@click.option("--image", "image", type=click.Path(path_type=Path), default=None, help="The image the mask belongs to (default: image.tif of the export folder).")
@click.option("--channel", default=None, help="Channel of the image (default: from the export).")
@click.option("--tool", default=None, help="Correction tool to record, e.g. labkit or napari.")
@config_option(GroundTruthConfig)
@item_id_option
@split_option
@replace_option
@voxel_option
def import_corrections(path, trainset_path, image, channel, tool, config, item_id, split, replace, voxel_size):
    """Add a corrected mask (an export folder or a TIFF) to a training set as hand-corrected data."""
    from pipeline.groundtruth.corrections import import_corrections as run_import
    from pipeline.groundtruth.trainset import format_balance

    entry = run_import(
        path, trainset_path, target=config.target, masks=config.masks, split=split or config.corrections.split, item_id=item_id,
        image_path=image, channel=channel, voxel_size=voxel_size, tool=tool, replace=replace,
    )
    click.echo(f"added {entry['id']} ({entry['stats']['n_instances']} nuclei, {format_balance(entry['stats']['class_balance'])}) to {trainset_path}")


@click.group()
def trainset():
    """Build and inspect training sets (images + instances + 3-class targets)."""


@trainset.command("create")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
def trainset_create(path):
    """Create an empty training set."""
    from pipeline.groundtruth.trainset import TrainingSet

    TrainingSet.create(path)
    click.echo(f"created {path}")


@trainset.command("info")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary and the items as JSON.")
def trainset_info(path, as_json):
    """Summarise a training set: items per split and source, class balance, nuclei and their size."""
    from pipeline.groundtruth.trainset import TrainingSet, format_balance

    ts = TrainingSet.open(path)
    summary = ts.summary()
    if as_json:
        click.echo(json.dumps({"summary": summary, "items": [{k: v for k, v in it.items() if k != "provenance"} for it in ts.items()]}, indent=1))
        return
    click.echo(f"{path}: {summary['items']} items, {summary['voxels']} voxels")
    click.echo(f"  splits: {summary['splits']}  sources: {summary['sources']}")
    if "class_balance" in summary:
        click.echo(f"  class balance: {format_balance(summary['class_balance'])}")
    for it in ts.items():
        vs = ", ".join(f"{v:.3g}" for v in it["voxel_size"])
        sizes = it["stats"].get("nucleus_diameters_um")
        size = f" of {' x '.join(f'{v:.3g}' for v in sizes)} um (z, y, x)" if sizes else ""
        click.echo(f"  {it['id']:<28} {it['split']:<5} {it['source']:<24} {str(tuple(it['stats']['shape'])):<16} voxel ({vs}) um  {it['stats']['n_instances']} nuclei{size}")


@trainset.command("add")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--image", required=True, type=click.Path(path_type=Path), help="Image TIFF (ZYX or TZYX).")
@click.option("--labels", required=True, type=click.Path(path_type=Path), help="Instance or binary mask TIFF of the same shape.")
@click.option("--source", required=True, callback=lambda c, p, v: _source(v), help="cellpose, hand-corrected, synthetic or real:<dataset>.")
@click.option("--channel", default="Hoechst", show_default=True, help="The channel the image shows.")
@config_option(GroundTruthConfig)
@item_id_option
@split_option
@replace_option
@voxel_option
def trainset_add(path, image, labels, source, channel, config, item_id, split, replace, voxel_size):
    """Prepare a mask and add it with its image (created if PATH is missing)."""
    from pipeline.groundtruth.files import add_files_to_trainset

    entries = add_files_to_trainset(
        path, image, labels, config, item_id=item_id, source=source, split=split or "train",
        channel=channel, voxel_size=voxel_size, replace=replace, progress=not progress_disabled(),
    )
    click.echo(f"added {', '.join(e['id'] for e in entries)} to {path}")


@trainset.command("from-synth")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@config_option(GroundTruthConfig)
@replace_option
def trainset_from_synth(path, config, replace):
    """Simulate the configured wells (synth.*) and add one item per time point."""
    from pipeline.groundtruth.builders import build_from_synth
    from pipeline.groundtruth.trainset import TrainingSet

    ts = TrainingSet.create(path, exist_ok=True)
    entries = build_from_synth(ts, config.synth, replace=replace, progress=not progress_disabled())
    click.echo(f"added {len(entries)} synthetic items to {ts.root}")


@trainset.command("from-samples")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder the sample paths are relative to (e.g. ../shared/data).")
@config_option(GroundTruthConfig)
@replace_option
def trainset_from_samples(path, data_dir, config, replace):
    """Add the configured real 3D samples (samples.items), rescaled to the target pixel scale."""
    from pipeline.errors import InputError
    from pipeline.groundtruth.builders import build_from_samples
    from pipeline.groundtruth.trainset import TrainingSet

    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such data folder")
    ts = TrainingSet.create(path, exist_ok=True)
    entries = build_from_samples(ts, config, data_dir, replace=replace, progress=not progress_disabled())
    click.echo(f"added {len(entries)} real samples to {ts.root}")


@trainset.command("remove")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.argument("item_id")
def trainset_remove(path, item_id):
    """Remove an item and its files."""
    from pipeline.groundtruth.trainset import TrainingSet

    TrainingSet.open(path).remove(item_id)
    click.echo(f"removed {item_id}")
