"""The model folder: card round trip, safe weight loading, input-mismatch errors, the shipped default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.config.train import UNetConfig
from pipeline.errors import InputError
from pipeline.segment.unet import segment_volume
from pipeline.segment.unet.card import ModelCard, build_model, default_model_path, load_card, load_model, save_model


def make_card(**kw) -> ModelCard:
    base = dict(
        name="tiny",
        architecture=UNetConfig(features=[4, 8], pool=[[1, 2, 2]]),
        voxel_size=[5.0, 1.24, 1.24],
        channels=["Hoechst"],
        patch_size=[8, 32, 32],
        tile=[8, 32, 32],
    )
    base.update(kw)
    return ModelCard(**base)


def test_roundtrip(tmp_path):
    torch.manual_seed(0)
    card = make_card(metrics={"best": {"f1_nucleus": 0.8}})
    model = build_model(card.architecture)
    save_model(model, card, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.pt"]
    loaded, card2 = load_model(tmp_path / "m")
    assert card2 == card and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


class Evil:
    def __reduce__(self):
        return (print, ("code ran at load time",))


def test_weights_loaded_with_weights_only(tmp_path):
    card = make_card()
    save_model(build_model(card.architecture), card, tmp_path)
    torch.save({"x": Evil()}, tmp_path / "weights.pt")  # a pickle that would run code
    with pytest.raises(InputError, match=r"weights\.pt: cannot load weights"):
        load_model(tmp_path)


def test_missing_and_mismatched_files(tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(InputError, match=r"model\.json: model card not found"):
        load_model(tmp_path)
    card = make_card()
    save_model(build_model(card.architecture), card, tmp_path)
    (tmp_path / "weights.pt").unlink()
    with pytest.raises(InputError, match=r"weights\.pt: weights file not found"):
        load_model(tmp_path)
    # weights of another architecture
    torch.save(build_model(UNetConfig(features=[4, 16], pool=[[1, 2, 2]])).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InputError, match="do not fit the architecture"):
        load_model(tmp_path)
    data = json.loads((tmp_path / "model.json").read_text())
    data["voxel_siz"] = data.pop("voxel_size")
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"model\.json.*voxel_siz.*unknown key"):
        load_card(tmp_path)


def test_card_consistency():
    with pytest.raises(ValueError, match="channel names"):
        make_card(channels=["Hoechst", "Cy3"])
    with pytest.raises(ValueError, match="class names"):
        make_card(classes=["background", "nucleus"])


def test_input_checks():
    card = make_card(voxel_tolerance=0.2)
    card.check_input(voxel_size=(5.5, 1.3, 1.2), n_channels=1, channels=["Hoechst", "GFP"])
    card.check_input(voxel_size=(5.0, 0.5, 0.5), source="img.tif")  # another voxel size is resampled, not refused
    with pytest.raises(InputError, match=r"img\.tif: voxel size must be three positive"):
        card.check_input(voxel_size=(5.0, 0.0, 0.5), source="img.tif")
    with pytest.raises(InputError, match=r"takes 1 channel\(s\).*has 3"):
        card.check_input(n_channels=3)
    with pytest.raises(InputError, match=r"needs channel\(s\) \['Hoechst'\]"):
        card.check_input(channels=["GFP"])


def test_segment_volume_checks_and_labels(rng):
    torch.manual_seed(0)
    card = make_card()
    model = build_model(card.architecture)
    vol = rng.integers(0, 1000, size=(6, 40, 36)).astype(np.uint16)
    probs, labels = segment_volume(vol, model, card, voxel_size=np.array([5.0, 1.24, 1.24]), device="cpu")
    assert probs.shape == (3, 6, 40, 36) and labels.shape == (6, 40, 36) and labels.dtype == np.uint32
    with pytest.raises(InputError, match="voxel size"):
        segment_volume(vol, model, card, voxel_size=(1.0, 1.0, 1.0))


def test_default_model_path_is_in_package():
    path = default_model_path()
    assert path.parts[-3:] == ("data", "models", "unet-default")
    if (path / "model.json").exists():
        model, card = load_model(path)
        assert card.classes == ["background", "edge", "nucleus"] and card.channels
        assert (path / card.weights).stat().st_size < 5_000_000
