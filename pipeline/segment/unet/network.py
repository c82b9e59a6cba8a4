"""The 3D U-Net: double 3x3x3 conv blocks, anisotropic pooling, skip connections, 1x1x1 head.

The network follows the thesis (section 2.2, 3.3): features ``[64, 128, 256]``, ReLU,
three output classes (background, edge, nucleus). Pooling can keep z, since the target
data has 5 um z-steps against 1.24 um pixels: the default pools ``(1, 2, 2)`` at the
first down-step and ``(2, 2, 2)`` after it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

LOG = logging.getLogger(__name__)

NORMS = (None, "batch", "instance", "group")
UPSAMPLINGS = ("transpose", "trilinear")


def default_pool(levels: int) -> list[tuple[int, int, int]]:
    """Pooling factors for ``levels`` down-steps: ``(1, 2, 2)`` first, then ``(2, 2, 2)``."""
    return [(1, 2, 2) if i == 0 else (2, 2, 2) for i in range(levels)]


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class DoubleConv(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by optional normalisation and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, norm: str | None = None, dropout: float = 0.0):
        layers: list[nn.Module] = []
        for i in range(2):
            layers += [
                nn.Conv3d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=norm is None),
                _norm(norm, out_ch),
                nn.ReLU(inplace=True),
            ]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers)


class Up(nn.Module):
    """Up-sample by ``factor``, concatenate the skip connection, double conv."""

    def __init__(self, in_ch: int, out_ch: int, factor: tuple[int, int, int], mode: str, norm: str | None, dropout: float):
        super().__init__()
        self.factor = tuple(factor)
        self.mode = mode
        if mode == "transpose":
            self.up = nn.ConvTranspose3d(in_ch, out_ch, kernel_size=self.factor, stride=self.factor)
        else:
            self.up = nn.Conv3d(in_ch, out_ch, kernel_size=1)
        self.conv = DoubleConv(2 * out_ch, out_ch, norm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            x = self.up(x)
        else:
            x = self.up(F.interpolate(x, scale_factor=self.factor, mode="trilinear", align_corners=False))
        if x.shape[2:] != skip.shape[2:]:
            # input not divisible by the pooling: pad (or crop) to the skip's size
            pads: list[int] = []
            for have, want in zip(reversed(x.shape[2:]), reversed(skip.shape[2:])):
                pads += [0, want - have]
            x = F.pad(x, pads)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet3D(nn.Module):
    """3D U-Net for semantic segmentation of nuclei (background / edge / nucleus).

    Parameters
    ----------
    in_channels : int
        Input channels.
    n_classes : int
        Output classes (logits, no softmax).
    features : sequence of int
        Channels per level, shallowest first; the last is the bottleneck.
    pool : sequence of (int, int, int), optional
        Pooling factor ``(z, y, x)`` per down-step (``len(features) - 1`` entries);
        :func:`default_pool` when omitted.
    upsampling : {"transpose", "trilinear"}
        Transposed convolution or trilinear interpolation followed by a 1x1x1 conv.
    norm : {None, "batch", "instance", "group"}
        Normalisation after each convolution.
    dropout : float
        ``Dropout3d`` probability after each block (0: none).
    centre : bool
        One more output: the logit of the nuclei's centre map (a sigmoid gives 0 outside
        nuclei, 1 at their centres).

    Notes
    -----
    Inputs whose size is a multiple of :attr:`divisor` pass through unchanged in size;
    others are handled by padding in the decoder, but the sliding-window predictor
    always feeds divisible tiles.

    Examples
    --------
    >>> net = UNet3D(features=(4, 8))
    >>> net(torch.zeros(1, 1, 4, 16, 16)).shape
    torch.Size([1, 3, 4, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 3,
        features: Sequence[int] = (64, 128, 256),
        pool: Sequence[Sequence[int]] | None = None,
        upsampling: str = "transpose",
        norm: str | None = None,
        dropout: float = 0.0,
        centre: bool = False,
    ):
        super().__init__()
        features = [int(f) for f in features]
        if not features or any(f < 1 for f in features):
            raise ValueError(f"features must be a non-empty list of positive integers, got {features}")
        if in_channels < 1 or n_classes < 1:
            raise ValueError(f"in_channels and n_classes must be positive, got {in_channels}, {n_classes}")
        pool = default_pool(len(features) - 1) if pool is None else [tuple(int(v) for v in p) for p in pool]
        if len(pool) != len(features) - 1 or any(len(p) != 3 or min(p) < 1 for p in pool):
            raise ValueError(f"pool needs {len(features) - 1} factors of three positive integers (z, y, x), got {pool}")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config = {
            "in_channels": int(in_channels),
            "n_classes": int(n_classes),
            "features": features,
            "pool": [list(p) for p in pool],
            "upsampling": upsampling,
            "norm": norm,
            "dropout": float(dropout),
            "centre": bool(centre),
        }
        self.n_classes = int(n_classes)
        self.n_outputs = int(n_classes) + int(bool(centre))
        self.pool_factors = pool
        self.down = nn.ModuleList()
        ch = in_channels
        for f in features:
            self.down.append(DoubleConv(ch, f, norm, dropout))
            ch = f
        self.up = nn.ModuleList(
            Up(features[i + 1], features[i], pool[i], upsampling, norm, dropout) for i in reversed(range(len(features) - 1))
        )
        self.head = nn.Conv3d(features[0], self.n_outputs, kernel_size=1)

    @property
    def divisor(self) -> tuple[int, int, int]:
        """Product of the pooling factors per axis: input sizes should be multiples of it."""
        out = [1, 1, 1]
        for p in self.pool_factors:
            out = [a * b for a, b in zip(out, p)]
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes [+ 1], z, y, x)`` of an input ``(batch, in_channels, z, y, x)``."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.pool_factors):
                skips.append(x)
                x = F.max_pool3d(x, kernel_size=self.pool_factors[i], stride=self.pool_factors[i], ceil_mode=True)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each batch normalisation that follows a convolution into that convolution (in place).

    For inference only (the model must be in eval mode): ``BN(conv(x))`` with BN's running
    statistics is one affine map per channel, so the convolution's weights and bias absorb
    it and the BN becomes an identity. The outputs are unchanged up to rounding and the
    forward pass skips one full-size pass over every activation.
    """
    if model.training:
        raise ValueError("fold_batchnorm is for a model in eval mode")
    for block in model.modules():
        if not isinstance(block, nn.Sequential):
            continue
        layers = list(block)
        for i, (conv, bn) in enumerate(zip(layers, layers[1:])):
            if isinstance(conv, nn.Conv3d) and isinstance(bn, nn.BatchNorm3d) and bn.track_running_stats:
                with torch.no_grad():
                    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    conv.weight.mul_(scale.reshape(-1, 1, 1, 1, 1))
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                    new_bias = (bias - bn.running_mean) * scale + bn.bias
                    if conv.bias is None:
                        conv.bias = nn.Parameter(new_bias)
                    else:
                        conv.bias.copy_(new_bias)
                block[i + 1] = nn.Identity()
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
