"""``spheroid info STORE``: what a store holds and how far each stage got."""

from __future__ import annotations

import json
import logging

import click

from pipeline.cli.options import parse_storage_options, storage_option
from pipeline.io.plate import Plate
from pipeline.io.verify import subgroups

LOG = logging.getLogger(__name__)


@click.command()
@click.argument("store")
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(store: str, storage_options: tuple[str, ...], as_json: bool) -> None:
    """Summarise STORE: fields, images, labels and how many volumes are done."""
    plate = Plate.open(store, storage_options=parse_storage_options(storage_options))
    summary = describe(plate)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"plate {summary['name']} at {plate.location.url}")
    for fld in summary["fields"]:
        click.echo(f"  field {fld['field']}")
        for item in fld["images"]:
            state = "complete" if item["complete"] else f"{item['done']}/{item['volumes']} volumes"
            click.echo(f"    {item['name']:<22} {str(tuple(item['shape'])):<28} {item['dtype']:<8} {state}")


@click.command()
@click.argument("store")
@storage_option
@click.option("--field", "fields", multiple=True, metavar="WELL/INDEX", help="Check only this field (repeatable).")
@click.option("--repair", is_flag=True, help="Unmark the damaged volumes, so that rerunning their stage redoes them.")
@click.pass_context
def verify(ctx: click.Context, store: str, storage_options: tuple[str, ...], fields: tuple[str, ...], repair: bool) -> None:
    """Check every finished volume of STORE for missing or damaged chunks.

    Reads each chunk file of every volume marked done (images, derived images and
    labels) and checks its CRC32C, without decompressing. Exit status 1 when damage is
    found. With --repair the damaged volumes are unmarked: run the stage that wrote each
    image again (convert, preprocess, segment...) and it redoes those volumes only.
    """
    from pipeline.io.verify import verify_plate

    plate = Plate.open(store, mode="r+" if repair else "r", storage_options=parse_storage_options(storage_options))
    damaged = verify_plate(plate, list(fields) or None, repair=repair, progress=not ctx.obj.get("quiet", False))
    for item in damaged:
        click.echo(f"damaged: field {item.field} {item.image} t={item.t} c={item.c}: {item.problem}")
    if not damaged:
        click.echo(f"{plate.location.url}: every finished volume is intact")
        return
    what = "unmarked; rerun the stages that wrote them" if repair else "run again with --repair to unmark them"
    click.echo(f"error: {len(damaged)} damaged volume(s) in {plate.location.url}: {what}", err=True)
    ctx.exit(1)


def describe(plate: Plate) -> dict:
    """Plain-data summary of a plate: per field, each image's shape, dtype and progress."""
    out = {"name": plate.name, "stages": sorted(plate.records()), "fields": []}
    for field in plate.fields():
        group = plate.group[field.path]
        images = []
        candidates = [("raw", False)] + [(k, False) for k in subgroups(group) if k not in ("labels", "tables")]
        if "labels" in group:
            candidates += [(k, True) for k in subgroups(group["labels"])]
        for name, is_label in candidates:
            has = field.has_labels(name) if is_label else field.has_image(name)
            if not has:
                continue
            arr = field.labels(name) if is_label else field.image(name)
            done = field.done(name, label=is_label)
            images.append(
                {
                    "name": f"labels/{name}" if is_label else name,
                    "shape": list(arr.shape),
                    "dtype": str(arr.dtype),
                    "volumes": int(done.size),
                    "done": int(done.sum()),
                    "complete": field.is_complete(name, label=is_label),
                }
            )
        out["fields"].append({"field": str(field), "images": images})
    return out
