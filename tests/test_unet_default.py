"""The shipped default U-Net: it loads safely and segments an unseen synthetic spheroid."""

from __future__ import annotations

import pytest

from pipeline.config.synth import SynthConfig
from pipeline.evaluate import matching
from pipeline.segment.unet.card import default_model_path, load_default_model
from pipeline.segment.unet import segment_volume
from pipeline.synth import generate


@pytest.fixture(scope="module")
def default_model():
    if not (default_model_path() / "model.json").is_file():
        pytest.fail(f"the default model is missing from {default_model_path()}")
    return load_default_model(device="cpu")


def test_card_describes_the_training(default_model):
    _, card = default_model
    assert card.name == "unet-default" and card.channels == ["Hoechst"]
    assert card.voxel_size == [5.0, 1.24, 1.24]
    assert card.classes == ["background", "edge", "nucleus"]
    sources = {item["source"] for item in card.training["items"]}
    assert "synthetic" in sources and any(s.startswith("real:") for s in sources)
    assert card.metrics["heldout"]["metrics"]["synthetic"]["match_f1"] > 0
    assert card.command and "reproduce.sh" in card.command
    # what segment needs to resample any data to the model's scale
    assert card.nucleus_diameter_um is not None and 6 < card.nucleus_diameter_um < 15
    # the card says which labelling its figures were computed with (issue 17): the shipped card's
    # training-time validation used the training config's thresholds, so it names them and gives
    # the figure with its own labelling beside
    key = "seed_centre" if card.architecture.centre else "seed_threshold"
    tuned = [r for r in card.metrics["labeling_tuning"] if r[key] == getattr(card.labeling, key)
             and r["foreground_threshold"] == card.labeling.foreground_threshold and r.get("seeds", "interior") == card.labeling.seeds
             and r.get("z_trim", 0.0) == card.labeling.z_trim and r.get("min_peak", 0.0) == card.labeling.min_peak]
    assert tuned
    if card.metrics["best"]["computed_with"].startswith("the card's labeling"):
        own = card.metrics["best"]
    else:
        own = card.metrics["card_labeling"]
        assert own["computed_with"].startswith("the card's labeling")
    assert abs(tuned[0]["match_f1"] - own["match_f1"]) < 1e-5  # the card rounds to 5 decimals


def test_segments_an_unseen_synthetic_spheroid(default_model):
    model, card = default_model
    # generator seed 5 and well C3: no training, validation or test item comes from them
    synth = generate(SynthConfig(shape=(21, 128, 128), n_timepoints=1, seed=5), well="C3")
    hoechst = synth.images[0, synth.channels.index("Hoechst")]
    probs, labels = segment_volume(hoechst, model, card, voxel_size=synth.voxel_size, channels=["Hoechst"], device="cpu")
    truth = synth.labels[0]
    m = matching(truth, labels, thresh=0.5)
    # the shipped model scores 0.71 here (precision 0.80); the bounds leave a margin for other
    # BLAS builds
    assert m.f1 > 0.6, f"instance F1@0.5 {m.f1:.3f} on an unseen synthetic spheroid"
    assert m.precision > 0.7


@pytest.mark.parametrize(("draw", "bound"), [(1, 0.85), (3, 0.6)])
def test_transfers_to_spheroids_rendered_with_other_settings(draw, bound):
    """Render settings drawn from the training ranges of configs/trainset-unet-varied.yaml with a
    generator seed (11) no training item comes from: each volume's density, nucleus size and shape,
    blur, noise and staining differ from every training volume's. The shipped model scores 0.95
    and 0.70 on these two draws; the group-normalised default before it 0.90 and 0.25 (false
    nuclei in the noisy background, where its per-tile statistics blew the noise up)."""
    from pathlib import Path

    import numpy as np

    from pipeline.config.base import load_config
    from pipeline.config.groundtruth import GroundTruthConfig
    from pipeline.config.segment import SegmentConfig
    from pipeline.groundtruth.builders import draw_settings
    from pipeline.preprocess.resample import resample_image, resample_labels
    from pipeline.segment.backends import UNetSegmenter

    varied = load_config(GroundTruthConfig, Path(__file__).resolve().parents[1] / "configs" / "trainset-unet-varied.yaml").synth
    settings, _ = draw_settings(varied.synth.model_copy(update={"seed": 11}), varied.vary, np.random.default_rng([11, draw]))
    shape, voxel = (21, 160, 160), (5.0, 1.24, 1.24)
    render = tuple(max(1, int(round(n * t / v))) for n, t, v in zip(shape, voxel, settings.voxel_size))
    synth = generate(settings.model_copy(update={"shape": render}), well="G9")
    image = np.clip(np.rint(resample_image(synth.images[0, 0], shape)), 0, 65535).astype(np.uint16)
    truth = resample_labels(synth.labels[0], shape)
    labels, _ = UNetSegmenter(SegmentConfig(device="cpu")).run(image, voxel_size=voxel)
    m = matching(truth, labels, thresh=0.5)
    assert m.f1 > bound, f"instance F1@0.5 {m.f1:.3f} (precision {m.precision:.3f}, recall {m.recall:.3f})"
