"""``spheroid demo``: the pipeline end to end on a generated example."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import config_option, progress_disabled, workers_option
from pipeline.config.demo import DemoConfig


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("spheroid-demo"), show_default=True, help="Working folder.")
@config_option(DemoConfig)
@workers_option
def demo(out: Path, config: DemoConfig, workers: int | None) -> None:
    """Generate a small FUCCI spheroid experiment and run convert -> preprocess -> segment -> evaluate.

    Uses the embedded defaults (a local Dask cluster, a local Zarr store). Running it again
    resumes and skips finished work.
    """
    from pipeline.demo import run_demo

    if workers is not None:
        config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"n_workers": workers})})
    s = run_demo(out, config, progress=not progress_disabled())
    click.echo(
        f"demo done: {s['volumes']} volume(s) in {len(s['fields'])} field(s) -> {s['store']}\n"
        f"  nuclei: {s['true_nuclei']} true, {s['predicted_nuclei']} found; at IoU >= {s['report_threshold']}: "
        f"precision {s['precision']:.3f}, recall {s['recall']:.3f}, F1 {s['f1']:.3f}; "
        f"Evaluation Score {s['evaluation_score']:.3f}\n"
        f"  figures and tables: {out / 'evaluation'}; summary: {out / 'demo.json'}\n"
        f"  look at it: napari {s['store']}/B/10/0 (with the napari-ome-zarr plugin)"
    )
