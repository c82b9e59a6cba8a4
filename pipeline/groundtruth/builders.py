"""Build training sets from the synthetic generator and from real 3D samples.

Real samples come at other voxel sizes than the target data (5.0, 1.24, 1.24 um). Two
policies bring them to the target's pixel scale (:class:`~pipeline.config.groundtruth.RescaleConfig`):

- ``voxel``: resample to the target voxel size. Right when the sample's nuclei are of a
  similar physical size (the 8-cell embryo: 16-21 um nuclei become ~13 px across).
- ``nucleus_size``: resample so that the median nucleus extent, per axis, is as many
  voxels as a target nucleus (``nucleus_um / voxel_size``: ~9 px in x/y, ~2 slices).
  The ovule crops (100^3 voxels of 0.28 x 0.127 x 0.127 um) hold ~3-4 um nuclei; at the
  target voxel size a crop would shrink to 6 x 10 x 10 voxels with nuclei 2-3 px across,
  useless for training. Matched by nucleus size they become ~15 x 38 x 38 voxels with
  ~9 px nuclei: real nucleus shapes, textures and contacts at the pixel scale the network
  works at. The item's ``voxel_size`` in the manifest is the *effective* one (what a
  voxel of the stored arrays measures), and its provenance records the policy, the
  factors and the measured nucleus extents.

Images are resampled linearly with anti-aliasing when shrinking, labels by nearest
neighbour; the target is then prepared from the resampled labels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pipeline.progress import progress_bar

from pipeline.config.groundtruth import GroundTruthConfig, RescaleConfig, SampleSource, SynthSetConfig, TargetConfig
from pipeline.config.synth import SynthConfig
from pipeline.errors import InputError
from pipeline.groundtruth.prepare import check_labels, prepare_target, summarize
from pipeline.groundtruth.tiffio import file_sha256, read_tiff
from pipeline.groundtruth.trainset import TrainingSet, format_balance
from pipeline.provenance import provenance

LOG = logging.getLogger(__name__)


def nucleus_extent(labels: np.ndarray, *, min_interior: int = 3) -> np.ndarray:
    """Median bounding-box extent ``(z, y, x)`` in voxels of the nuclei of a label image.

    Nuclei cut by the volume border are left out when at least ``min_interior`` others remain.
    """
    from scipy import ndimage as ndi

    slices = [s for s in ndi.find_objects(labels) if s is not None]
    if not slices:
        raise InputError("labels: no nuclei to measure")
    ext = np.array([[s.stop - s.start for s in sl] for sl in slices], float)
    interior = np.array([all(s.start > 0 and s.stop < n for s, n in zip(sl, labels.shape)) for sl in slices])
    if interior.sum() >= min_interior:
        ext = ext[interior]
    return np.median(ext, axis=0)


def rescale_factors(
    voxel_size: tuple[float, float, float], rescale: RescaleConfig, labels: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Zoom factors ``(z, y, x)`` for a sample (``>1`` enlarges) and what they were derived from."""
    voxel = np.asarray(voxel_size, float)
    target = np.asarray(rescale.voxel_size, float)
    info: dict[str, Any] = {"mode": rescale.mode, "source_voxel_size": voxel.tolist()}
    if rescale.mode == "none":
        factors = np.ones(3)
    elif rescale.mode == "voxel":
        factors = voxel / target
    else:
        if labels is None:
            raise InputError("nucleus_size rescaling needs the labels")
        extent = nucleus_extent(labels)
        want = rescale.nucleus_um / target
        factors = want / extent
        info.update({"nucleus_extent_px": extent.tolist(), "nucleus_extent_um": (extent * voxel).tolist(), "target_extent_px": want.tolist()})
    info["factors"] = factors.tolist()
    return factors, info


def rescale_pair(image: np.ndarray, labels: np.ndarray, factors) -> tuple[np.ndarray, np.ndarray]:
    """Resample an image (linear, anti-aliased when shrinking) and its labels (nearest) by ``factors``.

    Both outputs have the shape ``round(shape * factors)`` (at least 1 per axis); the image
    keeps its dtype (integers are rounded and clipped).
    """
    from skimage.transform import resize

    factors = np.asarray(factors, float)
    if np.allclose(factors, 1.0):
        return image, labels
    shape = tuple(max(1, int(round(n * f))) for n, f in zip(image.shape, factors))
    out = resize(image.astype(np.float32), shape, order=1, mode="edge", anti_aliasing=bool(np.any(factors < 1)), preserve_range=True)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    else:
        out = out.astype(np.float32)
    lab = resize(labels, shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True).astype(np.uint32)
    return out, lab


def add_sample(
    trainset: TrainingSet,
    sample: SampleSource,
    data_dir: str | Path,
    *,
    rescale: RescaleConfig,
    target: TargetConfig,
    replace: bool = False,
) -> dict[str, Any]:
    """Read one real sample, rescale it, prepare its target and add it to ``trainset``."""
    data_dir = Path(data_dir)
    image_path, label_path = data_dir / sample.image, data_dir / sample.labels
    image, image_voxel = read_tiff(image_path)
    labels, label_voxel = read_tiff(label_path)
    labels = check_labels(labels, str(label_path))
    if image.ndim != 3 or image.shape != labels.shape:
        raise InputError(f"{label_path}: shape {labels.shape} does not match the ZYX image {image_path} {image.shape}")
    voxel = sample.voxel_size or image_voxel or label_voxel
    if voxel is None:
        raise InputError(f"{image_path}: no voxel size in the TIFF metadata; set voxel_size for sample {sample.id!r}")
    rescale = sample.rescale or rescale
    factors, info = rescale_factors(voxel, rescale, labels)
    small_image, small_labels = rescale_pair(image, labels, factors)
    semantic, instances = prepare_target(small_labels, **target.model_dump())
    effective = tuple(float(v) for v in np.asarray(voxel, float) * np.asarray(image.shape) / np.asarray(small_image.shape))
    stats = summarize(small_labels, instances, semantic)
    record = provenance(
        "trainset-from-samples",
        target,
        origin={"image": str(image_path), "labels": str(label_path), "image_sha256": file_sha256(image_path), "labels_sha256": file_sha256(label_path)},
        rescale={**info, "shape_in": list(image.shape), "shape_out": list(small_image.shape), "effective_voxel_size": list(effective)},
        tool="spheroid trainset from-samples",
        summary=stats,
    )
    LOG.info(
        "%s: %s -> %s voxels (%s, effective voxel %s um), %d nuclei, balance %s",
        sample.id, image.shape, small_image.shape, rescale.mode, np.round(effective, 3).tolist(), stats["instances_out"], format_balance(stats["class_balance"]),
    )
    return trainset.add(
        small_image, instances, semantic, id=sample.id, voxel_size=effective, channel=sample.channel,
        source=f"real:{sample.dataset}", split=sample.split, provenance=record, replace=replace,
    )


def build_from_samples(trainset: TrainingSet, config: GroundTruthConfig, data_dir: str | Path, *, replace: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Add every sample of ``config.samples`` (paths relative to ``data_dir``) to ``trainset``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such data folder")
    _check_free(trainset, [s.id for s in config.samples.items], replace)
    entries = []
    for sample in progress_bar(config.samples.items, desc="samples", unit="sample", disable=not progress, leave=False):
        entries.append(add_sample(trainset, sample, data_dir, rescale=config.samples.rescale, target=config.samples.target, replace=replace))
    return entries


#: Settings that are ranges (low, high): drawn values are sorted to stay one.
RANGE_SETTINGS = ("nucleus_diameter_um", "elongation", "z_ratio", "glowing_gain")


def draw_settings(base: SynthConfig, vary: dict, rng: np.random.Generator) -> tuple[SynthConfig, dict[str, Any]]:
    """``base`` with the ``vary`` settings drawn uniformly in their ranges (see :class:`SynthSetConfig`)."""
    data = base.model_dump(mode="json")
    drawn: dict[str, Any] = {}
    for key, spec in vary.items():
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node[part]
        current = node[last]
        if isinstance(current, (list, tuple)):
            if isinstance(spec[0], list):
                value = [float(rng.uniform(lo, hi)) for lo, hi in spec]
            else:
                factor = float(rng.uniform(*spec))
                value = [float(c) * factor for c in current]
            if last in RANGE_SETTINGS:
                value = sorted(value)
        else:
            value = float(rng.uniform(*spec))
            if isinstance(current, int) and not isinstance(current, bool):
                value = int(round(value))
        node[last] = value
        drawn[key] = value
    return SynthConfig.model_validate(data), drawn


def build_from_synth(trainset: TrainingSet, config: SynthSetConfig, *, replace: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Simulate each configured well and add one item per time point to ``trainset``.

    Item ids are ``synth-s<seed>-<well>-t<t>``; a whole well goes to one split. With
    ``vary``, each well's generator settings are drawn anew (seeded by seed and well); with
    ``resample_to``, each rendered volume is resampled to that voxel size.
    """
    import zlib

    from pipeline.preprocess.resample import resample_image, resample_labels
    from pipeline.synth import generate

    synth = config.synth.model_copy(update={"wells": list(config.wells)})
    times = range(synth.n_timepoints) if config.timepoints is None else config.timepoints
    bad = [t for t in times if not 0 <= t < synth.n_timepoints]
    if bad:
        raise InputError(f"synth.timepoints: {bad} outside 0..{synth.n_timepoints - 1}")
    _check_free(trainset, [f"synth-s{synth.seed}-{well}-t{t}" for well in config.wells for t in times], replace)
    entries = []
    for well, split in progress_bar(config.wells.items(), desc="synth wells", unit="well", disable=not progress, leave=False):
        rng = np.random.default_rng([synth.seed, zlib.crc32(well.encode())])
        settings, drawn = draw_settings(synth, config.vary, rng) if config.vary else (synth, {})
        voxel = settings.voxel_size
        if config.resample_to is not None:
            shape = tuple(int(s) for s in synth.shape)
            render = tuple(max(1, int(round(n * t / v))) for n, t, v in zip(shape, config.resample_to, voxel))
            settings = settings.model_copy(update={"shape": render})
            voxel = tuple(float(v) for v in config.resample_to)
        result = generate(settings, well=well, progress=False)
        channel = result.channels.index(config.channel)
        for t in times:
            image, labels = result.images[t, channel], result.labels[t]
            if config.resample_to is not None and image.shape != shape:
                image = np.clip(np.rint(resample_image(image, shape)), 0, 65535).astype(np.uint16)
                labels = resample_labels(labels, shape)
            semantic, instances = prepare_target(labels, **config.target.model_dump())
            stats = summarize(labels, instances, semantic)
            origin = {"generator": "pipeline.synth", "well": well, "t": int(t), "seed": synth.seed, "synth": settings.model_dump(mode="json"),
                      "drawn": drawn, "rendered_voxel_size": list(result.voxel_size)}
            record = provenance("trainset-from-synth", config.target, origin=origin, summary=stats)
            entries.append(
                trainset.add(
                    image, instances, semantic, id=f"synth-s{synth.seed}-{well}-t{t}", voxel_size=voxel,
                    channel=config.channel, source="synthetic", split=split, provenance=record, replace=replace,
                )
            )
            LOG.info("synthetic %s t=%d (%s): %d nuclei, balance %s", well, t, split, stats["instances_out"], format_balance(stats["class_balance"]))
    return entries


def _check_free(trainset: TrainingSet, ids: list[str], replace: bool) -> None:
    """Fail before any work if items would clash with existing ones."""
    taken = [i for i in ids if i in trainset]
    if taken and not replace:
        raise InputError(f"{trainset.root}: item(s) {', '.join(taken)} already exist; pass --replace to overwrite")
