"""``spheroid run EXPERIMENT.yaml`` and ``spheroid report STORE``."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import config_option, parse_storage_options, progress_disabled, storage_option, workers_option
from pipeline.config.experiment import STAGES
from pipeline.config.report import ReportConfig

stage_choice = click.Choice(list(STAGES))


@click.command()
@click.argument("experiment", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from", "start", type=stage_choice, default=None, help="Run from this stage on (the stages before it must be done).")
@click.option("--until", "stop", type=stage_choice, default=None, help="Stop after this stage.")
@click.option("--dry-run", is_flag=True, help="Check the experiment and print the plan (wells, volumes, stages left, time and storage); run nothing.")
@click.option("--overwrite", is_flag=True, help="Recompute the selected stages instead of resuming them (convert: replace the store).")
@workers_option
def run(experiment: Path, start: str | None, stop: str | None, dry_run: bool, overwrite: bool, workers: int | None) -> None:
    """Run a whole experiment: convert -> preprocess -> segment (-> evaluate) -> cellcycle -> track -> report.

    EXPERIMENT is a YAML file (configs/experiment.yaml documents every key): the raw files,
    the plate layout, channel roles, each stage's settings and the cluster. Stages whose
    outputs are complete are skipped, so running it again after a crash or a scancel
    resumes. The report is written to STORE/report/index.html.
    """
    from pipeline.config.experiment import load_experiment
    from pipeline.experiment.plan import format_plan
    from pipeline.experiment.run import run_experiment

    config = load_experiment(experiment)
    ctx = click.get_current_context()
    cluster = ctx.obj.get("cluster") if ctx.obj else None
    if cluster is not None:
        config = config.model_copy(update={"cluster": cluster})
    if workers is not None:
        config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"n_workers": workers})})
    result = run_experiment(config, source=str(experiment), start=start, stop=stop, overwrite=overwrite, dry_run=dry_run, progress=not progress_disabled())
    if dry_run:
        click.echo(format_plan(result.plan))
        return
    click.echo(summary_text(result))


def summary_text(result) -> str:
    """What a finished run prints."""
    lines = [f"store: {result.store}"]
    if result.ran:
        lines.append("ran: " + ", ".join(f"{s} ({result.seconds[s]:.0f} s)" for s in result.ran))
    if result.skipped:
        lines.append("already done: " + ", ".join(result.skipped))
    fits = result.fits
    if fits is not None and len(fits):
        for row in fits.itertuples():
            value = f"EC50 {row.ec50:.3g} {row.unit or ''} [{row.ec50_low:.3g}, {row.ec50_high:.3g}]" if row.status == "ok" else f"no EC50 ({row.status})"
            lines.append(f"  {row.drug} / {row.readout}: {value}")
    if result.report:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)


@click.command()
@click.argument("store")
@config_option(ReportConfig)
@click.option("--experiment", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Experiment file whose plate layout names the conditions (else every well is its own).")
@storage_option
def report(store: str, config: ReportConfig, experiment: Path | None, storage_options) -> None:
    """Write the report of a store (after cellcycle and track): STORE/report/index.html, tables and figures."""
    from pipeline.io.plate import Plate
    from pipeline.report.run import write_report

    plate = Plate.open(store, mode="r", storage_options=parse_storage_options(storage_options))
    layout, title, nuclear = None, None, "Hoechst"
    if experiment is not None:
        from pipeline.config.experiment import load_experiment

        exp = load_experiment(experiment)
        layout = exp.conditions(sorted({f.well for f in plate.fields()}))
        title, nuclear = exp.name, exp.channels.nuclear
    out = write_report(plate, config, layout=layout, title=title, nuclear_channel=nuclear)
    click.echo(f"report of {out.wells} well(s), {out.timepoints} time point(s): {out.url}")
