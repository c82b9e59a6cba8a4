"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from pipeline.config.base import load_config


def config_option(model: type, default: str | None = None) -> Callable:
    """``-c/--config FILE``: the callback returns the validated pydantic model.

    Without the option the model's embedded defaults are used.
    """

    def callback(ctx: click.Context, param: click.Parameter, value: str | None):
        ctx.meta["config_source"] = str(value) if value is not None else "<defaults>"
        return load_config(model, value)

    return click.option(
        "-c",
        "--config",
        "config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=default,
        callback=callback,
        help=f"YAML config for this stage ({model.__name__}); embedded defaults when omitted.",
    )


def tta_option(default: str | None = None) -> Callable:
    """``--tta N``: passes of the U-Net's test-time augmentation (``SegmentConfig.tta``)."""
    from pipeline.config.segment import TTA_PASSES

    return click.option(
        "--tta", type=click.Choice([str(n) for n in TTA_PASSES]), default=default, show_default=default is not None,
        help="U-Net: test-time augmentation, passes averaged (8: the flips in z, y and x; about 7-8x the network's time).",
    )


overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs instead of resuming.")

workers_option = click.option(
    "-w", "--workers", type=click.IntRange(min=1), default=None, help="Local Dask workers (overrides cluster.n_workers)."
)

scheduler_option = click.option(
    "--scheduler", default=None, metavar="ADDRESS", help="Use a running Dask scheduler (tcp://host:port) instead of a local cluster."
)

storage_option = click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec option for s3:// and other remote stores (repeatable), e.g. endpoint_url=http://127.0.0.1:9000.",
)


def parse_storage_options(items: tuple[str, ...]) -> dict[str, Any]:
    """``("key=value", ...)`` to a dict; ``endpoint_url`` goes under ``client_kwargs`` for S3."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--storage-option")
        key, value = item.split("=", 1)
        if key == "endpoint_url":
            out.setdefault("client_kwargs", {})["endpoint_url"] = value
        elif value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            out[key] = value
    return out


def apply_cluster_overrides(config: Any, workers: int | None, scheduler: str | None) -> Any:
    """Return ``config`` with the cluster options applied to its ``cluster`` section.

    In order: ``spheroid --cluster FILE`` (replaces the section), then ``--workers`` and
    ``--scheduler`` of the command.
    """
    ctx = click.get_current_context(silent=True)
    cluster = config.cluster
    if ctx is not None and ctx.obj and ctx.obj.get("cluster") is not None:
        cluster = ctx.obj["cluster"]
    if workers is not None:
        cluster = cluster.model_copy(update={"n_workers": workers})
    if scheduler is not None:
        cluster = cluster.model_copy(update={"kind": "address", "address": scheduler})
    return config.model_copy(update={"cluster": cluster})


def config_source() -> str:
    """The ``-c`` file of the running command (``"<defaults>"`` without one), for error messages."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("config_source", "<defaults>") if ctx is not None else "<defaults>"


def progress_disabled() -> bool:
    """True when ``-q`` was given (no progress bars)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.obj and ctx.obj.get("quiet"))


def _parse_slice(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from pipeline.slices import Slice

    return Slice.parse(value)


slice_option = click.option(
    "--slice",
    "part",
    default=None,
    metavar="I/N",
    callback=_parse_slice,
    help="Only part I of N (from 0) of the fields, in plate order: one task of a job array "
    "(deploy/slurm/array.sh); 'slurm' takes I and N from the array task's environment.",
)


def fields_for(plate: Any, fields: tuple[str, ...], part: Any) -> list[str] | None:
    """The ``--field`` values cut to ``--slice``: ``None`` for every field; ``[]`` when the
    slice holds none (said in one line: the command then has nothing to do)."""
    from pipeline.slices import select_fields

    selected = select_fields(plate, fields, part)
    if selected == []:
        click.echo(f"slice {part}: no field to process (the plate has {len(plate.select(list(fields) or None))})")
    return selected
