"""MODEL.md (the model card in plain words) and the learning-curve figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.train.modelcard import model_md, write_model_md
from pipeline.train.records import learning_curve_figure

REPO = Path(__file__).resolve().parents[1]
DEFAULT = Path("pipeline/data/models/unet-default")


def test_shipped_default_has_its_model_md_up_to_date(monkeypatch):
    """The shipped MODEL.md is what the generator writes from the shipped model.json:
    after a new default, rerun `spheroid model-card pipeline/data/models/unet-default`."""
    monkeypatch.chdir(REPO)
    card = json.loads((DEFAULT / "model.json").read_text())
    assert (DEFAULT / "MODEL.md").read_text() == model_md(card, folder=DEFAULT)


def test_model_md_says_what_a_biologist_needs(tmp_path):
    card = json.loads((REPO / DEFAULT / "model.json").read_text())
    card["nucleus_diameter_um"] = 8.0
    card["metrics"]["heldout"]["metrics"]["real:ovule-nuclei-3d"].update(match_f1=0.1, match_precision=0.5, match_recall=0.05, n_true=26)
    text = model_md(card, folder=tmp_path)
    for heading in ("## How to use it", "## Voxel size and nucleus size", "## What it was trained on", "## How well it does", "## Where it is known to fail", "## Reproduce"):
        assert heading in text
    assert "5 x 1.24 x 1.24 um" in text and "about 8.0 um across" in text and "6.5, 6.5 voxels" in text
    n_val = card["metrics"]["best"]["n_true"]
    assert f"on {n_val} nuclei" in text  # every figure with the nuclei behind it
    assert "| train | synthetic | 26 |" in text and "| val | synthetic | 2 |" in text
    failures = text.split("## Where it is known to fail")[1]
    assert "held-out real:ovule-nuclei-3d it finds few nuclei right: instance F1 0.10 on 26 nuclei" in failures
    assert "misses nuclei more often" in failures and "only 26 nuclei" in failures
    tuned = card["metrics"]["card_labeling"]  # re-chosen by tune-labeling: its figure is shown too
    assert f"Validation with the card's labelling (re-chosen on split `val`" in text and f"instance F1 {tuned['match_f1']:.2f}" in text
    del card["metrics"]["card_labeling"]
    assert "Validation with the card's labelling" not in model_md(card, folder=tmp_path)


def test_model_md_without_validation_or_heldout(tmp_path):
    card = {"format": "spheroid-stardist", "name": "sd", "voxel_size": [1.0, 0.5, 0.5], "channels": ["DAPI|Hoechst"], "training": {}, "metrics": {}}
    text = model_md(card)
    assert "StarDist" in text and "DAPI or Hoechst" in text and "--backend stardist" in text
    assert "Validation: none" in text and "its quality was never measured" in text and "Held-out: not measured" in text


def test_model_card_command_writes_model_md(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.json").write_text((REPO / DEFAULT / "model.json").read_text())
    result = CliRunner().invoke(cli, ["-q", "model-card", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "MODEL.md").read_text().startswith("# unet-default")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["-q", "model-card", str(empty)])
    assert result.exit_code == 1 and "model card not found" in result.output
    with pytest.raises(Exception, match="model card not found"):
        write_model_md(empty)


def _rows(with_val: bool):
    rows = [{"kind": "train", "step": s, "loss": 2.0 / s} for s in range(10, 110, 10)]
    if with_val:
        rows += [{"kind": "val", "step": s, "loss": 1.0, "f1_edge": 0.1 * k, "f1_nucleus": 0.2 * k, "match_f1": 0.15 * k} for k, s in enumerate((25, 50, 75, 100), 1)]
    return rows


def _texts(fig) -> str:
    return " ".join([fig._suptitle.get_text()] + [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts])


def test_learning_curve_has_title_best_step_and_caption():
    import matplotlib.pyplot as plt

    fig = learning_curve_figure(_rows(True), metric="match_f1", best_step=75, title="mine: learning curve")
    texts = _texts(fig)
    assert "mine: learning curve" in texts
    for name in ("f1_edge", "f1_nucleus", "match_f1"):
        assert name in texts  # explained in the caption
    assert "IoU >= 0.5" in texts and "match_f1 0.450" in texts  # the best step's score written at its mark
    scores = fig.axes[1]
    marks = [line for line in scores.get_lines() if list(line.get_xdata()) == [75, 75]]
    assert marks and "best step 75" in marks[0].get_label()
    legend = scores.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > scores.get_window_extent().x1 - 1  # beside the axes, not over curves
    plt.close(fig)


def test_learning_curve_without_validation_says_so():
    import matplotlib.pyplot as plt

    fig = learning_curve_figure(_rows(False), metric="match_f1", best_step=None)
    scores = fig.axes[1]
    assert not scores.get_lines() and "no validation data" in " ".join(t.get_text() for t in scores.texts)
    plt.close(fig)
