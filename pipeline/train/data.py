"""Training volumes in memory: read through :class:`TrainingSet`, normalised, padded to the patch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config.train import NormalizationConfig
from pipeline.errors import InputError
from pipeline.groundtruth.sizes import nucleus_sizes, typical_diameters
from pipeline.groundtruth.trainset import TrainingSet
from pipeline.preprocess.normalize import percentile_normalize

LOG = logging.getLogger(__name__)

#: At most this many voxel positions per class and volume are kept for centring patches.
MAX_CENTRES = 200_000


@dataclass
class Volume:
    """One training-set item, ready to sample from.

    Attributes
    ----------
    id : str
        Item id.
    image : numpy.ndarray
        float32 ``(1, z, y, x)``, percentile-normalised, zero-padded to at least the patch.
    semantic : numpy.ndarray
        uint8 ``(z, y, x)`` target, padded with background.
    instances : numpy.ndarray
        uint32 ``(z, y, x)`` instance labels, padded with 0.
    shape : tuple of int
        The item's shape before padding.
    voxel_size : tuple of float
        ``(z, y, x)`` um.
    source, split, channel : str
        From the manifest.
    centres : dict
        Flat indices (into the padded volume) of edge (1) and nucleus (2) voxels.
    rescale_mode : str or None
        How a real sample was brought to the target scale (from its provenance), e.g.
        ``"nucleus_size"``: then its voxel size differs from the target's on purpose.
    """

    id: str
    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    source: str
    split: str
    channel: str
    centres: dict[int, np.ndarray] = field(default_factory=dict)
    rescale_mode: str | None = None
    centre: np.ndarray | None = None
    """float16 ``(z, y, x)`` centre map of the instances (padded with 0), for models with the
    centre output (:func:`centre_target`)."""


def pad_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad the last three axes of ``array`` at the end up to ``shape`` (no cropping)."""
    extra = [max(0, s - a) for s, a in zip(shape, array.shape[-3:])]
    if not any(extra):
        return array
    return np.pad(array, [(0, 0)] * (array.ndim - 3) + [(0, e) for e in extra])


def target_voxel_size(trainset: TrainingSet, splits: Sequence[str], configured: Sequence[float] | None, channel: str | None = None) -> list[float]:
    """The voxel size a model is trained at: ``configured``, else the median over the items.

    Items rescaled by nucleus size (provenance ``rescale.mode == "nucleus_size"``) match the
    target's *pixel* scale of nuclei while their physical voxel size differs; they are left
    out of the median (unless nothing else is there).

    Raises
    ------
    InputError
        When the splits hold no item (of ``channel``).
    """
    items = [it for split in splits for it in trainset.items(split) if channel is None or it["channel"] == channel]
    if configured is not None:
        return [float(v) for v in configured]
    if not items:
        raise InputError(f"{trainset.root}: no items in split(s) {', '.join(splits)}" + (f" of channel {channel!r}" if channel else ""))
    physical = [it for it in items if _rescale_mode(it) != "nucleus_size"] or items
    return [float(v) for v in np.median([it["voxel_size"] for it in physical], axis=0)]


def _rescale_mode(item: dict[str, Any]) -> str | None:
    return ((item.get("provenance") or {}).get("rescale") or {}).get("mode")


def resample_item(image: np.ndarray, instances: np.ndarray, semantic: np.ndarray, factors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An item at another voxel size: image linear (anti-aliased), instances nearest, target rebuilt.

    The semantic target is prepared again from the resampled instances (edge width one voxel
    at the new scale), with the edge placement (inside or outside the instances) of the item.
    """
    from pipeline.groundtruth.prepare import prepare_target
    from pipeline.preprocess.resample import resample_image, resample_labels, zoomed_shape

    shape = zoomed_shape(image.shape, factors)
    edge = semantic == 1
    inner = bool(edge.any()) and int((edge & (instances > 0)).sum()) * 2 > int(edge.sum())
    small = resample_image(image.astype(np.float32), shape)
    labels = resample_labels(instances, shape)
    target, labels = prepare_target(labels, min_area=0, smooth="none", edge_mode="inner" if inner else "outer")
    return small, labels, target


def centre_target(instances: np.ndarray, voxel_size: Sequence[float], *, sigma: float = 0.15) -> np.ndarray:
    """The centre map of an instance image: inside each instance a Gaussian peaked at 1 on its centroid.

    The Gaussian's sigma per axis is ``sigma`` times the instance's extent along that axis (in
    um, at least half a voxel), and each instance's values are scaled so that its own maximum
    is 1; 0 outside instances. Thresholded at 0.5-0.8 it leaves one compact seed per instance,
    apart even where instances touch (an oracle labelling of synthetic spheroids from this map
    scores F1 0.96-0.99 at IoU 0.5; a map of the distance to the instance boundary fragments
    flat nuclei two slices thick and scored 0.42-0.95). Vectorised over all instances.

    Returns
    -------
    numpy.ndarray
        float32, the instances' shape.
    """
    labels = np.asarray(instances)
    out = np.zeros(labels.shape, np.float32)
    index = np.nonzero(labels > 0)
    if not index[0].size:
        return out
    lab = labels[index].astype(np.int64)
    n = int(lab.max()) + 1
    counts = np.maximum(np.bincount(lab, minlength=n), 1).astype(np.float64)
    q = np.zeros(lab.size, np.float64)
    for axis, size in enumerate(voxel_size):
        coord = index[axis].astype(np.float64)
        mean = np.bincount(lab, weights=coord, minlength=n) / counts
        low = np.full(n, np.inf)
        high = np.full(n, -np.inf)
        np.minimum.at(low, lab, coord)
        np.maximum.at(high, lab, coord)
        spread = np.maximum(sigma * (high - low + 1) * size, 0.5 * size)
        q += ((coord - mean[lab]) * size / spread[lab]) ** 2
    value = np.exp(-0.5 * q)
    peak = np.zeros(n)
    np.maximum.at(peak, lab, value)
    out[index] = value / np.maximum(peak[lab], 1e-12)
    return out


def load_volumes(
    trainset: TrainingSet,
    split: str,
    *,
    normalization: NormalizationConfig,
    patch_size: Sequence[int] = (1, 1, 1),
    channel: str | None = None,
    seed: int = 0,
    voxel_size: Sequence[float] | None = None,
    tolerance: float = 0.1,
    resample: bool = True,
    centre: bool = False,
) -> list[Volume]:
    """Read the items of one split, bring them to ``voxel_size``, normalise each image and pad it to the patch.

    Parameters
    ----------
    trainset : TrainingSet
        The opened set.
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    normalization : NormalizationConfig
        Percentiles for :func:`percentile_normalize` (per volume, before any resampling).
    patch_size : sequence of int
        Volumes smaller than this are zero-padded (background in the target).
    channel : str, optional
        Keep only items of this channel.
    seed : int
        Seed of the sub-sampling of centre positions in very large volumes.
    voxel_size : sequence of float, optional
        The model's voxel size; items further than ``tolerance`` (relative, any axis) from it
        are resampled to it (items matched by nucleus size are left alone). ``None``: items as they are.
    tolerance : float
        See ``voxel_size``.
    resample : bool
        ``False`` refuses items at another voxel size instead of resampling them.
    centre : bool
        Also compute each volume's :func:`centre_target` (float16).

    Returns
    -------
    list of Volume
        Each with the voxel size it has after resampling.

    Raises
    ------
    InputError
        An item at another voxel size when ``resample`` is false.
    """
    rng = np.random.default_rng(seed)
    out = []
    for item in trainset.items(split):
        if channel is not None and item["channel"] != channel:
            continue
        image, instances, semantic = trainset.load(item)
        normed = percentile_normalize(image, normalization.low, normalization.high, clip=normalization.clip)
        voxel = tuple(float(v) for v in item["voxel_size"])
        mode = _rescale_mode(item)
        if voxel_size is not None and mode != "nucleus_size":
            have, want = np.asarray(voxel), np.asarray(voxel_size, float)
            off = np.abs(have - want) / want
            if (off > tolerance).any():
                if not resample:
                    raise InputError(
                        f"{trainset.root}: item {item['id']!r} has voxel size {voxel} um, the model is trained for "
                        f"{tuple(float(r) for r in want)} um (tolerance {tolerance:.0%}); set resample: true, voxel_size or voxel_tolerance"
                    )
                factors = np.where(off > tolerance, have / want, 1.0)
                normed, instances, semantic = resample_item(normed, instances, semantic, factors)
                LOG.info("%s: voxel size %s um resampled by %s to %s", item["id"], voxel, np.round(factors, 3).tolist(), normed.shape)
                voxel = tuple(float(v) for v in np.where(off > tolerance, want, have))
        shape = tuple(int(s) for s in normed.shape)
        vol = Volume(
            id=item["id"],
            image=pad_to(normed[None], patch_size),
            semantic=pad_to(semantic, patch_size),
            instances=pad_to(instances, patch_size),
            shape=shape,
            voxel_size=voxel,
            source=item["source"],
            split=item["split"],
            channel=item["channel"],
            rescale_mode=mode,
        )
        if centre:
            vol.centre = pad_to(centre_target(instances, voxel), patch_size).astype(np.float16)
        flat = vol.semantic.ravel()
        for cls in (1, 2):
            idx = np.flatnonzero(flat == cls)
            if idx.size > MAX_CENTRES:
                idx = np.sort(rng.choice(idx, MAX_CENTRES, replace=False))
            vol.centres[cls] = idx
        out.append(vol)
    LOG.info("loaded %d %s volume(s) from %s", len(out), split, trainset.root)
    return out


def nucleus_size(volumes: Sequence[Volume], voxel_size: Sequence[float], *, min_interior: int = 10) -> tuple[float, list[float]] | None:
    """``(nucleus_diameter, nucleus_diameters)`` of the volumes' instances in one measurement
    (:func:`pipeline.groundtruth.sizes.typical_diameters`); ``None`` when no nucleus is found."""
    return typical_diameters(
        [nucleus_sizes(v.instances[: v.shape[0], : v.shape[1], : v.shape[2]], voxel_size) for v in volumes], min_interior=min_interior,
    )


def nucleus_diameter(volumes: Sequence[Volume], voxel_size: Sequence[float], *, min_interior: int = 10) -> float | None:
    """Median nucleus diameter (um, equivalent sphere) of the volumes' instances, counted in
    voxels of ``voxel_size`` (the model's scale: what the network sees).

    Nuclei cut by a volume's border are left out when at least ``min_interior`` others remain.
    """
    found = nucleus_size(volumes, voxel_size, min_interior=min_interior)
    return found[0] if found else None


def nucleus_diameters(volumes: Sequence[Volume], voxel_size: Sequence[float], *, min_interior: int = 10) -> list[float] | None:
    """The nuclei's diameters along z, y and x (um), scaled to :func:`nucleus_diameter`
    (see :func:`pipeline.groundtruth.sizes.nucleus_sizes`). ``None`` when no nucleus is found."""
    found = nucleus_size(volumes, voxel_size, min_interior=min_interior)
    return found[1] if found else None


def items_nucleus_diameter(trainset, splits: Sequence[str], channel: str | None = None) -> float | None:
    """Median nucleus diameter (um) over the items of ``splits``, each measured at its own voxel size.

    Items rescaled by nucleus size (whose voxel size is not their physical one) are left
    out. ``None`` when no item has a measurable nucleus.
    """
    from types import SimpleNamespace

    diameters = []
    for split in splits:
        for item in trainset.items(split):
            if (channel is not None and item["channel"] != channel) or _rescale_mode(item) == "nucleus_size":
                continue
            _, instances, _ = trainset.load(item)
            d = nucleus_diameter([SimpleNamespace(instances=instances, shape=instances.shape)], item["voxel_size"])
            if d:
                diameters.append(d)
    return round(float(np.median(diameters)), 3) if diameters else None


def edges_inside_instances(volumes: Sequence[Volume]) -> bool:
    """Whether most edge voxels of the targets lie inside instances (``inner`` edges) rather than outside."""
    inside = total = 0
    for v in volumes:
        edge = v.semantic == 1
        total += int(edge.sum())
        inside += int((edge & (v.instances > 0)).sum())
    return total > 0 and inside > total / 2


def summarize(volumes: Sequence[Volume]) -> list[dict[str, Any]]:
    """Per volume: id, source, split, channel, shape and class balance (for the model card)."""
    rows = []
    for v in volumes:
        region = v.semantic[: v.shape[0], : v.shape[1], : v.shape[2]]
        counts = np.bincount(region.ravel(), minlength=3)[:3] / max(region.size, 1)
        rows.append(
            {
                "id": v.id,
                "source": v.source,
                "split": v.split,
                "channel": v.channel,
                "shape": list(v.shape),
                "voxel_size": list(v.voxel_size),
                "n_instances": int(np.unique(v.instances).size - (1 if (v.instances == 0).any() else 0)),
                "class_balance": [round(float(c), 4) for c in counts],
            }
        )
    return rows
