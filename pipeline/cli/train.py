"""``spheroid train``: train the 3D U-Net on a training set (a separate, resumable job)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from pipeline.cli.options import config_option, progress_disabled, tta_option
from pipeline.config.base import with_overrides
from pipeline.config.train import TrainConfig

LOG = logging.getLogger(__name__)

#: Exit status of a run stopped by SIGTERM/SIGUSR1 after saving its checkpoint (EX_TEMPFAIL):
#: run the same command again to resume. ``deploy/slurm/train.sbatch`` requeues on it.
EXIT_RESUMABLE = 75


@click.command()
@config_option(TrainConfig)
@click.option("--trainset", type=click.Path(file_okay=False, path_type=Path), default=None, help="Training-set folder (overrides 'trainset').")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output folder (overrides 'out').")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from OUT/checkpoint.pt when it exists.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Overrides 'device'.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Overrides 'max_steps' (also the length of the LR schedule).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (overrides 'threads').")
@click.option("--backend", type=click.Choice(["unet", "stardist", "cellpose"]), default=None, help="Overrides 'backend'.")
@click.option("--init-from", "init_from", type=click.Path(file_okay=False, path_type=Path), default=None, help="Fine-tune: start from this model folder's weights (overrides 'init_from').")
@click.option("--voxel-size", "voxel_size", nargs=3, type=click.FloatRange(min=0, min_open=True), default=None, metavar="Z Y X", help="Voxel size (um) to train at; items are resampled to it (default: the training set's).")
def train(
    config: TrainConfig,
    trainset: Path | None,
    out: Path | None,
    resume: bool,
    device: str | None,
    max_steps: int | None,
    threads: int | None,
    backend: str | None,
    init_from: Path | None,
    voxel_size: tuple[float, float, float] | None,
) -> None:
    """Train a segmentation model on a training set: the 3D U-Net, or StarDist / Cellpose (`backend:`).

    On a laptop's CPU: -c configs/train-unet-cpu.yaml (a small U-Net, minutes; the README's
    "Train your own model"). Without -c the defaults are the thesis' large network, for a GPU.
    The voxel size is the training set's unless --voxel-size (or --init-from's model) sets it.
    A training set comes from `spheroid trainset add` or `spheroid groundtruth --add-to`.

    Writes OUT/model/ (weights + model.json: the model to segment with, and MODEL.md: the
    same in plain words) and OUT/metrics.csv;
    the U-Net also OUT/checkpoint.pt and OUT/learning_curve.png, and SIGTERM or SIGUSR1
    saves its checkpoint and exits with status 75; the same command resumes.
    """
    from pipeline.train.job import run_training

    updates = {
        "trainset": str(trainset) if trainset is not None else None,
        "out": str(out) if out is not None else None,
        "device": device,
        "max_steps": max_steps,
        "threads": threads,
        "backend": backend,
        "init_from": str(init_from) if init_from is not None else None,
        "voxel_size": list(voxel_size) if voxel_size else None,
    }
    config = with_overrides(config, updates)
    if config.command is None:
        config = config.model_copy(update={"command": _command_line(config)})
    result = run_training(config, resume=resume, progress=not progress_disabled())
    if result.interrupted:
        click.echo(f"interrupted at step {result.step}: checkpoint in {result.out}; run the same command to resume", err=True)
        sys.exit(EXIT_RESUMABLE)
    best = ", ".join(f"{k} {result.best[k]:.3f}" for k in ("f1_edge", "f1_nucleus", "match_f1") if k in result.best)
    click.echo(
        f"trained {result.step} steps in {result.time_s / 60:.1f} min"
        + (" (early stop)" if result.stopped_early else "")
        + (f"; best at step {result.best_step}: {best}" if best else "")
        + f"; model: {result.model_dir}"
    )


@click.command("test-model")
@click.argument("model", type=click.Path(file_okay=False, path_type=Path))
@click.option("--trainset", required=True, type=click.Path(file_okay=False, path_type=Path), help="Training-set folder with the held-out items.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True, help="Split to score.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@tta_option("1")
@click.option("--update-card", is_flag=True, help="Store the result under metrics.heldout in MODEL/model.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def test_model(model: Path, trainset: Path, split: str, device: str, tta: str, update_card: bool, as_json: bool) -> None:
    """Score MODEL (any backend) on held-out items: instance F1 at IoU 0.5 (U-Net: also per-class F1), per source.

    The model runs as `spheroid segment` runs it (same tile rule, precision, labelling).
    """
    import json

    from pipeline.train.heldout import evaluate_model, record_in_card

    result = evaluate_model(model, trainset, split=split, device=device, tta=int(tta))
    if update_card:
        record_in_card(model, result)  # and rewrites MODEL.md
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for name, m in result["metrics"].items():
        pixels = f"F1 background {m['f1_background']:.3f}, edge {m['f1_edge']:.3f}, nucleus {m['f1_nucleus']:.3f}; " if "f1_edge" in m else ""
        click.echo(f"{split} {name}: {pixels}instances F1@0.5 {m['match_f1']:.3f} ({m['n_true']} true, {m['n_pred']} predicted)")


@click.command("tune-labeling")
@click.argument("model", type=click.Path(file_okay=False, path_type=Path))
@click.option("--trainset", required=True, type=click.Path(file_okay=False, path_type=Path), help="Training-set folder with the items to tune on.")
@click.option("--split", type=click.Choice(["val", "test", "train"]), default="val", show_default=True, help="Split to tune on (not one you report held-out figures on).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
def tune_labeling(model: Path, trainset: Path, split: str, device: str) -> None:
    """Choose a U-Net MODEL's labelling again (seed mode, seed and foreground thresholds, z-trim, least peak p(nucleus)) on a split, and store it in its card.

    `spheroid train` does this on its val split after training; this re-does it for a trained
    model, e.g. after a new labelling option, or on val items of your own data.
    """
    from pipeline.train.heldout import tune_model_labeling

    result = tune_model_labeling(model, trainset, split=split, device=device)
    after = result["after"]
    click.echo(f"{split} ({len(result['items'])} volumes): instance F1@0.5 {result['match_f1_before']:.3f} -> {result['match_f1']:.3f} "
               f"with {after['seeds']} seeds, seed {after['seed_threshold']:.2f}, foreground {after['foreground_threshold']:.2f}, "
               f"z-trim {after['z_trim']:.2f}, min peak {after['min_peak']:.2f}; card updated: {model}")


@click.command("model-card")
@click.argument("model", type=click.Path(file_okay=False, path_type=Path))
def model_card(model: Path) -> None:
    """Write MODEL/MODEL.md: the model card (model.json) in plain words, for any backend.

    What it was trained on, at what voxel size and nucleus size, its validation and held-out
    figures with the number of nuclei behind them, where it is known to fail. `spheroid train`
    and `spheroid test-model --update-card` write it themselves; this rewrites it.
    """
    from pipeline.train.modelcard import write_model_md

    click.echo(f"wrote {write_model_md(model)}")


def _command_line(config: TrainConfig) -> str:
    """The command as typed (when run as ``spheroid``), else an equivalent one."""
    if Path(sys.argv[0]).name == "spheroid" and len(sys.argv) > 1:
        return "spheroid " + shlex.join(sys.argv[1:])
    return shlex.join(["spheroid", "train", "--trainset", str(config.trainset), "--out", config.out, "--max-steps", str(config.max_steps)])
