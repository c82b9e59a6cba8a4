"""``spheroid demo``: ``spheroid run`` on a generated example plate."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import config_option, progress_disabled, workers_option
from pipeline.config.demo import DemoConfig


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("spheroid-demo"), show_default=True, help="Working folder.")
@config_option(DemoConfig)
@click.option("--overwrite", is_flag=True, help="Recompute every stage instead of resuming (a folder from another version or other settings).")
@workers_option
def demo(out: Path, config: DemoConfig, overwrite: bool, workers: int | None) -> None:
    """Generate a small FUCCI spheroid plate (controls and one G1-arresting drug at six doses)
    and run the whole experiment on it: convert -> preprocess -> segment -> evaluate ->
    cellcycle -> track -> report.

    Writes OUT/experiment.yaml (run it again with `spheroid run`) and the report at
    OUT/plate.zarr/report/index.html. Uses a local Dask cluster; running it again resumes
    (--overwrite recomputes everything).
    """
    from pipeline.demo import run_demo

    if workers is not None:
        config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"n_workers": workers})})
    s = run_demo(out, config, progress=not progress_disabled(), overwrite=overwrite)
    lines = [f"demo done in {s['seconds']['total']:.0f} s: {s['wells']} wells x {s['timepoints']} time points -> {s['store']}"]
    ev = s.get("evaluation")
    if ev:
        lines.append(f"  segmentation vs truth ({ev['volumes']} volumes): F1 {ev['f1']:.3f} at IoU >= {ev['threshold']}, Evaluation Score {ev['evaluation_score']:.3f}")
    for fit in s["fits"]:
        if fit["status"] == "ok":
            truth = f" (true {fit['true_ec50']:g}: {fit['fold_error']:.2f}-fold, {'inside' if fit['true_in_interval'] else 'outside'} the interval)" if "true_ec50" in fit else ""
            lines.append(f"  {fit['drug']} / {fit['readout']}: EC50 {fit['ec50']:.3g} {fit['unit']} [{fit['ec50_low']:.3g}, {fit['ec50_high']:.3g}]{truth}")
        else:
            lines.append(f"  {fit['drug']} / {fit['readout']}: no EC50 ({fit['status']})")
    lines.append(f"  report: {s['report']}")
    lines.append(f"  experiment file: {s['experiment']} (spheroid run {s['experiment']})")
    click.echo("\n".join(lines))
