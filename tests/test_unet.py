"""The 3D U-Net network and its sliding-window predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.segment.unet.network import UNet3D, count_parameters, default_pool
from pipeline.segment.unet.predict import gaussian_importance, iter_tiles, predict_volume, tile_starts, tta_transforms


@pytest.mark.parametrize(
    "kwargs",
    [
        {"features": (4, 8)},
        {"features": (4, 8, 16), "upsampling": "trilinear", "norm": "group"},
        {"features": (4, 8, 16), "pool": [(1, 2, 2), (1, 2, 2)], "norm": "batch", "dropout": 0.1},
        {"features": (4,), "norm": "instance"},
    ],
)
def test_unet_output_shape(kwargs):
    torch.manual_seed(0)
    net = UNet3D(**kwargs)
    x = torch.randn(2, 1, 8, 32, 32)
    assert net(x).shape == (2, 3, 8, 32, 32)
    assert net.config["features"] == list(kwargs["features"])


def test_unet_anisotropic_default_pool_and_divisor():
    net = UNet3D(features=(4, 8, 16))
    assert net.pool_factors == default_pool(2) == [(1, 2, 2), (2, 2, 2)]
    assert net.divisor == (2, 4, 4)
    # the first pooling keeps z: a 2-slice input still goes through three levels
    assert net(torch.zeros(1, 1, 2, 16, 16)).shape == (1, 3, 2, 16, 16)


def test_unet_handles_non_divisible_input():
    net = UNet3D(features=(4, 8, 16))
    assert net(torch.zeros(1, 1, 5, 19, 21)).shape == (1, 3, 5, 19, 21)


def test_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pool needs 1"):
        UNet3D(features=(4, 8), pool=[(1, 2, 2), (2, 2, 2)])
    with pytest.raises(ValueError, match="upsampling"):
        UNet3D(features=(4, 8), upsampling="nearest")
    with pytest.raises(ValueError, match="norm"):
        UNet3D(features=(4, 8), norm="layer")
    with pytest.raises(ValueError, match="features"):
        UNet3D(features=())


def test_thesis_default_size():
    # thesis architecture: [64, 128, 256], 3 classes; a known parameter count guards the block layout
    net = UNet3D()
    enc = (1 * 64 + 64 * 64) * 27 + 128 + (64 * 128 + 128 * 128) * 27 + 256 + (128 * 256 + 256 * 256) * 27 + 512
    up2 = 256 * 128 * 8 + 128 + (256 * 128 + 128 * 128) * 27 + 256
    up1 = 128 * 64 * 4 + 64 + (128 * 64 + 64 * 64) * 27 + 128
    head = 64 * 3 + 3
    assert count_parameters(net) == enc + up2 + up1 + head


def test_gaussian_and_tiles():
    w = gaussian_importance((5, 9, 9))
    assert w.shape == (5, 9, 9) and w.dtype == np.float32
    assert w[2, 4, 4] == pytest.approx(1.0) and w.min() >= 1e-3 and w[0, 0, 0] < w[2, 4, 4]
    assert tile_starts(10, 10, 5) == [0]
    assert tile_starts(25, 10, 5) == [0, 5, 10, 15]
    starts = tile_starts(23, 8, 6)
    assert starts[0] == 0 and starts[-1] == 15 and max(np.diff(starts)) <= 6
    covered = np.zeros((7, 23, 23), bool)
    for s in iter_tiles((7, 23, 23), (4, 8, 8), 0.25):
        covered[s] = True
    assert covered.all()


class Pointwise(nn.Module):
    """A per-voxel model: a sliding window must reproduce its one-shot output exactly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 1)

    def forward(self, x):
        return self.conv(torch.tanh(x))


def test_predict_equals_one_shot_for_pointwise_model(rng):
    torch.manual_seed(0)
    model = Pointwise()
    volume = rng.normal(size=(11, 37, 29)).astype(np.float32)  # divisible by no tile
    probs = predict_volume(model, volume, tile=(4, 16, 16), overlap=0.5, batch_size=3, device="cpu")
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(volume)[None, None]), 1)[0].numpy()
    assert probs.shape == (3, 11, 37, 29) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_predict_single_tile_equals_forward_of_padded_volume(rng):
    torch.manual_seed(0)
    net = UNet3D(features=(4, 8, 16)).eval()  # divisor (2, 4, 4)
    volume = rng.normal(size=(5, 30, 27)).astype(np.float32)
    probs = predict_volume(net, volume, tile=(8, 32, 32), overlap=0.25, device="cpu")
    padded = np.zeros((8, 32, 32), np.float32)
    padded[:5, :30, :27] = volume
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(padded)[None, None]), 1)[0, :, :5, :30, :27].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    assert net.training is False


def test_predict_runs_channels_last_and_leaves_the_model_as_it_was(rng):
    torch.manual_seed(0)
    net = UNet3D(features=(4, 8)).eval()
    volume = rng.normal(size=(4, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(volume)[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(predict_volume(net, volume, tile=(4, 16, 16), device="cpu"), ref, atol=1e-5)
    assert all(p.is_contiguous() for p in net.parameters())  # training keeps its layout
    net = net.to(memory_format=torch.channels_last_3d)
    predict_volume(net, volume, tile=(4, 16, 16), device="cpu")
    weights = [p for p in net.parameters() if p.dim() == 5]
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in weights)


def test_predict_tiled_unet_is_close_to_one_shot_and_normalised(rng):
    torch.manual_seed(0)
    net = UNet3D(features=(4, 8)).eval()
    volume = rng.normal(size=(6, 40, 44)).astype(np.float32)
    probs = predict_volume(net, volume, tile=(6, 24, 24), overlap=0.5, device="cpu")
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(volume)[None, None]), 1)[0].numpy()
    # away from tile borders the receptive field is covered: tiled ~ one-shot
    assert np.abs(probs - ref)[:, 2:-2, 8:-8, 8:-8].mean() < 0.02


@pytest.mark.parametrize("passes", [2, 4, 8, 16])
def test_tta_is_the_mean_of_the_passes_transformed_back(rng, passes):
    """Each pass sees the volume flipped (and y-x swapped), its output is turned back, the passes averaged."""
    torch.manual_seed(0)
    net = UNet3D(features=(4, 8)).eval()
    volume = rng.normal(size=(6, 20, 28)).astype(np.float32)  # y != x: a swapped pass needs the tile swapped too
    tile = (6, 16, 24)
    expected = []
    for axes, swap in tta_transforms(passes):
        view = np.flip(volume, axes) if axes else volume
        view = np.swapaxes(view, -1, -2) if swap else view
        probs = predict_volume(net, np.ascontiguousarray(view), tile=(6, 24, 16) if swap else tile, device="cpu")
        probs = np.swapaxes(probs, -1, -2) if swap else probs
        expected.append(np.flip(probs, axes) if axes else probs)
    got = predict_volume(net, volume, tile=tile, device="cpu", tta=passes)
    assert got.shape == (3, 6, 20, 28)
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-5)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)
    assert len({(axes, swap) for axes, swap in tta_transforms(passes)}) == passes


def test_tta_of_a_pointwise_model_is_its_plain_output(rng):
    """A model that sees one voxel at a time is unchanged by flips: every pass is turned back exactly."""
    model = Pointwise()
    volume = rng.normal(size=(5, 12, 17)).astype(np.float32)
    plain = predict_volume(model, volume, tile=(4, 8, 8), overlap=0.5, device="cpu")
    for passes in (1, 2, 4, 8, 16, True):
        np.testing.assert_allclose(predict_volume(model, volume, tile=(4, 8, 8), overlap=0.5, device="cpu", tta=passes), plain, atol=1e-5)
    with pytest.raises(ValueError, match="tta must be one of"):
        predict_volume(model, volume, tile=(4, 8, 8), tta=3)


def test_predict_rejects_bad_input():
    with pytest.raises(ValueError, match="overlap"):
        predict_volume(Pointwise(), np.zeros((4, 8, 8), np.float32), overlap=1.0)
    with pytest.raises(ValueError, match="shape"):
        predict_volume(Pointwise(), np.zeros((8, 8), np.float32))


def test_fold_batchnorm_keeps_the_output():
    import torch

    from pipeline.segment.unet.network import UNet3D, fold_batchnorm

    torch.manual_seed(0)
    net = UNet3D(features=[4, 8], pool=[[1, 2, 2]], norm="batch", centre=True)
    for _ in range(3):
        net(torch.randn(2, 1, 4, 16, 16))  # running statistics
    net.eval()
    x = torch.randn(1, 1, 4, 16, 16)
    with torch.no_grad():
        before = net(x)
        fold_batchnorm(net)
        after = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    assert torch.allclose(before, after, atol=1e-5) and after.shape == (1, 4, 4, 16, 16)
