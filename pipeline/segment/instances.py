"""From semantic classes or class probabilities to nucleus instances.

The thesis labelled connected components of the nucleus class (cc3d); a single
voxel where the edge class was missed then merged two touching nuclei into one.
:func:`label_nuclei` instead finds one *seed* per nucleus in the confident
interior (nucleus class, edges excluded, optionally eroded in y-x and size
filtered), then grows the seeds by a watershed over the whole foreground
(nucleus + edge), so touching nuclei keep apart as long as their interiors do.

A model with the centre output (:class:`~pipeline.config.train.UNetConfig` ``centre``)
predicts a map that peaks at 1 on every nucleus' centroid and falls to 0 at its boundary;
its seeds are the regions where that map exceeds ``seed_centre`` (one per nucleus, apart
even where two nuclei touch without a visible boundary) and the watershed runs on the map.

With ``seeds="maxima"`` the seeds are instead the local maxima of p(nucleus) (lightly smoothed
in y-x) within a footprint of about half a nucleus: a blob of nucleus class that covers two
nuclei - stacked in z, where the axial blur leaves no voxel of edge between them, or side by
side - keeps one seed per nucleus wherever the probability dips between them. On the default
model's test volumes this splits most of the merges the interior seeds leave (instance F1 at
IoU 0.5 +0.03 to +0.06 on synthetic spheroids, see docs/SEGMENTATION.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from pipeline.config.train import LabelingConfig

LOG = logging.getLogger(__name__)

BACKGROUND, EDGE, NUCLEUS = 0, 1, 2


def _masks_from_input(
    data: np.ndarray, seed_threshold: float, foreground_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(nucleus class, interior, foreground, p_nucleus or None) from a semantic map or probabilities."""
    if data.ndim == 3:
        if np.issubdtype(data.dtype, np.floating):
            raise ValueError("a 3D input must be a semantic map of integers (0 background, 1 edge, 2 nucleus)")
        nucleus = data == NUCLEUS
        return nucleus, nucleus, data > BACKGROUND, None
    if data.ndim == 4:
        if data.shape[0] not in (3, 4):
            raise ValueError(f"probabilities must have 3 classes on axis 0 (background, edge, nucleus) and optionally the centre map, got shape {data.shape}")
        p = np.asarray(data, dtype=np.float32)
        argmax = np.argmax(p, axis=0)
        nucleus = argmax == NUCLEUS
        interior = nucleus & (p[NUCLEUS] > seed_threshold)
        foreground = (p[EDGE] + p[NUCLEUS]) > foreground_threshold
        return nucleus, interior, foreground, p[NUCLEUS]
    raise ValueError(f"expected a (z, y, x) semantic map or (3, z, y, x) probabilities, got shape {data.shape}")


def _erode_xy(mask: np.ndarray, iterations: int) -> np.ndarray:
    if iterations <= 0:
        return mask
    struct = np.zeros((3, 3, 3), dtype=bool)
    struct[1] = ndi.generate_binary_structure(2, 1)  # 4-connected cross in the y-x plane, no z
    return ndi.binary_erosion(mask, structure=struct, iterations=iterations)


def label_nuclei(
    data: np.ndarray,
    *,
    seed_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    erode_xy: int = 1,
    min_seed_size: int = 4,
    min_size: int = 20,
    elevation: str = "probability",
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    include_edge: bool = False,
    seed_centre: float = 0.5,
    seeds: str = "interior",
    seed_footprint: Sequence[int] = (3, 5, 5),
    seed_smooth: Sequence[float] = (0.0, 0.8, 0.8),
    markers: np.ndarray | None = None,
    z_trim: float = 0.0,
    min_peak: float = 0.0,
) -> np.ndarray:
    """Label nucleus instances: seeded watershed from the confident nucleus interior.

    Parameters
    ----------
    data : numpy.ndarray
        Either a semantic map ``(z, y, x)`` of integers (0 background, 1 edge, 2 nucleus)
        or class probabilities ``(3, z, y, x)`` in that class order.
    seed_threshold : float
        Probabilities only: interior voxels need nucleus as the most likely class and
        p(nucleus) above this.
    foreground_threshold : float
        Probabilities only: instances may grow where p(edge) + p(nucleus) is above this.
    erode_xy : int
        Erode the interior this many times in y-x (4-connected) before seeding; splits thin
        bridges between nuclei. Seeds that erosion would erase entirely are kept uneroded.
    min_seed_size : int
        Seeds (6-connected components of the eroded interior) smaller than this are dropped.
    min_size : int
        Instances smaller than this many voxels are removed.
    elevation : {"probability", "distance"}
        Watershed landscape: ``-p(nucleus)`` (probabilities only) or minus the distance
        transform of the foreground (with ``voxel_size`` as sampling). A semantic map always
        uses the distance.
    voxel_size : sequence of float
        Voxel size (z, y, x) for the distance transform.
    include_edge : bool
        Keep the edge voxels each instance grew into. By default instances are cut back to
        the nucleus class, as in the ground truth, where the edge lies outside each mask.
    seed_centre : float
        With a fourth channel (the predicted centre map): seeds are the 6-connected regions
        above this (of any size), and the watershed runs on minus the map; ``seed_threshold``,
        ``erode_xy``, ``elevation`` and ``min_seed_size`` are then not used.
    seeds : {"interior", "maxima"}
        Probabilities only: seeds are the connected components of the interior (``interior``),
        or the local maxima of p(nucleus) above ``seed_threshold`` within ``seed_footprint``
        (``maxima``; plateaus and touching maxima give one seed). ``erode_xy`` and
        ``min_seed_size`` apply to interior seeds only.
    seed_footprint : sequence of int
        ``maxima``: the neighbourhood (z, y, x voxels) a seed is the maximum of.
    seed_smooth : sequence of float
        ``maxima``: Gaussian sigma (z, y, x voxels) applied to p(nucleus) before the maxima are
        found; the watershed then runs on the smoothed map.
    markers : numpy.ndarray, optional
        ``maxima``: seeds found beforehand (uint32 labels of ``data``'s shape), e.g. by
        :func:`maxima_seeds_on` on the model's grid; they replace the maxima search.
    z_trim : float
        Cut each instance's end slices (first and last) whose area is below this fraction of
        its largest slice (:func:`trim_z`); 0 keeps them.
    min_peak : float
        Probabilities only: drop instances whose highest p(nucleus) is below this
        (:func:`drop_unconfident`); 0 keeps them all.

    Returns
    -------
    numpy.ndarray
        uint32 labels ``(z, y, x)``, 0 background, 1..N consecutive.

    Examples
    --------
    >>> sem = np.zeros((3, 9, 16), np.uint8)
    >>> sem[:, 2:7, 2:7] = 2; sem[:, 2:7, 9:14] = 2
    >>> int(label_nuclei(sem, min_size=0).max())
    2
    """
    if elevation not in ("probability", "distance"):
        raise ValueError(f"elevation must be 'probability' or 'distance', got {elevation!r}")
    if seeds not in ("interior", "maxima"):
        raise ValueError(f"seeds must be 'interior' or 'maxima', got {seeds!r}")
    nucleus, interior, foreground, p_nucleus = _masks_from_input(data, seed_threshold, foreground_threshold)
    foreground |= nucleus
    if data.ndim == 4 and data.shape[0] == 4:
        centre = np.asarray(data[3], dtype=np.float32)
        seeds = cc3d.connected_components((centre > seed_centre) & foreground, connectivity=6).astype(np.uint32)
        return _grow(seeds, -centre, foreground, nucleus, 1, min_size, include_edge, z_trim, p_nucleus, min_peak)  # a small nucleus has a small seed
    if not interior.any():
        return np.zeros(interior.shape, dtype=np.uint32)
    if seeds == "maxima" and p_nucleus is not None:
        smooth = _smooth(p_nucleus, seed_smooth)
        if markers is None:
            markers = maxima_markers(smooth, foreground, seed_threshold, seed_footprint)
        landscape = -smooth if elevation == "probability" else _distance(foreground, voxel_size)
        return _grow(markers, landscape, foreground, nucleus, 1, min_size, include_edge, z_trim, p_nucleus, min_peak)

    # Seeds: components of the eroded interior; components erosion erased are added back whole.
    eroded = _erode_xy(interior, erode_xy)
    seeds = cc3d.connected_components(eroded.astype(np.uint8), connectivity=6).astype(np.uint32)
    if erode_xy > 0:
        whole = cc3d.connected_components(interior.astype(np.uint8), connectivity=6)
        lost = np.setdiff1d(np.unique(whole[interior]), np.unique(whole[eroded]))
        if lost.size:
            back = np.isin(whole, lost)
            extra = cc3d.connected_components(back.astype(np.uint8), connectivity=6).astype(np.uint32)
            seeds[back] = extra[back] + seeds.max()
    if elevation == "probability" and p_nucleus is not None:
        landscape = -p_nucleus
    else:
        landscape = _distance(foreground, voxel_size)
    return _grow(seeds, landscape, foreground, nucleus, min_seed_size, min_size, include_edge, z_trim, p_nucleus, min_peak)


def _smooth(p_nucleus: np.ndarray, sigma: Sequence[float]) -> np.ndarray:
    return ndi.gaussian_filter(p_nucleus, tuple(float(v) for v in sigma)) if max(sigma) > 0 else p_nucleus


def maxima_markers(smooth: np.ndarray, foreground: np.ndarray, threshold: float, footprint: Sequence[int]) -> np.ndarray:
    """Seeds of ``seeds="maxima"``: local maxima of the (smoothed) p(nucleus) within ``footprint``, above ``threshold``.

    Touching maxima (plateaus) form one seed (26-connected); uint32 labels 1..N.
    """
    peaks = (smooth >= ndi.maximum_filter(smooth, size=tuple(int(v) for v in footprint))) & (smooth > threshold) & foreground
    return cc3d.connected_components(peaks.astype(np.uint8), connectivity=26).astype(np.uint32)


def maxima_seeds_on(probs: np.ndarray, labeling: LabelingConfig, shape: Sequence[int]) -> np.ndarray:
    """The maxima seeds of probabilities on the model's grid, placed on a finer grid of ``shape``.

    One voxel per seed, at its centroid scaled to ``shape``: where probabilities are
    interpolated to the data's finer grid, the seeds are still found on the grid the
    network computed them on (interpolation leaves plateaus and ridges with spurious maxima).
    """
    p_nucleus = np.asarray(probs[NUCLEUS], dtype=np.float32)
    foreground = ((probs[EDGE] + probs[NUCLEUS]) > labeling.foreground_threshold) | (np.argmax(probs[: NUCLEUS + 1], axis=0) == NUCLEUS)
    coarse = maxima_markers(_smooth(p_nucleus, labeling.seed_smooth), foreground, labeling.seed_threshold, labeling.seed_footprint)
    out = np.zeros(tuple(shape), dtype=np.uint32)
    n = int(coarse.max())
    if n == 0:
        return out
    centres = np.asarray(ndi.center_of_mass(coarse > 0, coarse, index=np.arange(1, n + 1)), dtype=np.float64).reshape(n, 3)
    scale = np.asarray(shape, np.float64) / np.asarray(coarse.shape, np.float64)
    idx = np.clip(np.rint((centres + 0.5) * scale - 0.5).astype(np.int64), 0, np.asarray(shape) - 1)
    out[idx[:, 0], idx[:, 1], idx[:, 2]] = np.arange(1, n + 1, dtype=np.uint32)
    return out


def _distance(foreground: np.ndarray, voxel_size: Sequence[float]) -> np.ndarray:
    """Minus the distance to the background (the watershed's ``distance`` landscape)."""
    return -ndi.distance_transform_edt(foreground, sampling=tuple(float(v) for v in voxel_size)).astype(np.float32)


def _drop_small(labels: np.ndarray, min_size: int) -> None:
    """Set labels with fewer than ``min_size`` voxels to 0 (in place)."""
    if min_size > 1:
        sizes = np.bincount(labels.ravel())
        small = np.flatnonzero(sizes < min_size)
        small = small[small > 0]
        if small.size:
            lut = np.arange(sizes.size, dtype=labels.dtype)
            lut[small] = 0
            labels[...] = lut[labels]


def _grow(
    seeds: np.ndarray, landscape: np.ndarray, foreground: np.ndarray, nucleus: np.ndarray,
    min_seed_size: int, min_size: int, include_edge: bool, z_trim: float = 0.0,
    p_nucleus: np.ndarray | None = None, min_peak: float = 0.0,
) -> np.ndarray:
    """Seeds (small ones dropped) grown by a watershed over ``landscape`` within ``foreground``."""
    _drop_small(seeds, min_seed_size)
    if not seeds.any():
        return np.zeros(seeds.shape, dtype=np.uint32)
    labels = watershed(landscape, markers=seeds, mask=foreground).astype(np.uint32)
    if not include_edge:
        labels[~nucleus] = 0
    if p_nucleus is not None:
        drop_unconfident(labels, p_nucleus, min_peak)
    labels = finish_labels(labels, z_trim, min_size)
    LOG.debug("label_nuclei: %d seeds -> %d instances", int(seeds.max()), int(labels.max()))
    return labels


def drop_unconfident(labels: np.ndarray, p_nucleus: np.ndarray, min_peak: float) -> np.ndarray:
    """Remove (in place) the instances whose highest ``p_nucleus`` is below ``min_peak``.

    Examples
    --------
    >>> lab = np.array([[[1, 1, 0, 2, 2]]], np.uint32)
    >>> p = np.array([[[0.9, 0.6, 0.0, 0.3, 0.2]]], np.float32)
    >>> drop_unconfident(lab, p, 0.5).tolist()
    [[[1, 1, 0, 0, 0]]]
    """
    if min_peak <= 0 or not labels.any():
        return labels
    n = int(labels.max())
    peaks = ndi.maximum(p_nucleus, labels, index=np.arange(1, n + 1))
    keep = np.ones(n + 1, dtype=bool)
    keep[1:] = np.asarray(peaks) >= min_peak
    if not keep.all():
        labels[~keep[labels]] = 0
    return labels


def finish_labels(labels: np.ndarray, z_trim: float, min_size: int) -> np.ndarray:
    """The last steps of :func:`label_nuclei`: :func:`trim_z`, instances below ``min_size`` dropped, ids 1..N.

    Applied to labels :func:`label_nuclei` made with ``z_trim=0`` (on a copy), it gives the
    labels of the same call with ``z_trim``: trimming only shrinks an instance, and each
    instance's cut depends on its own voxels alone. The labelling search reuses one
    watershed for every z-trim this way.
    """
    trim_z(labels, z_trim)
    _drop_small(labels, min_size)
    return _relabel(labels)[0]


def trim_z(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Cut each instance's first and last slices whose area is below ``fraction`` of its largest slice (in place).

    Only end slices go (from the top and the bottom inwards, up to the first slice at or
    above the fraction), so an instance stays one piece. Works slice by slice: memory is
    one slice's bincount per slice, not a copy of the volume.

    Examples
    --------
    >>> lab = np.zeros((4, 5, 5), np.uint32)
    >>> lab[0, 2, 2] = 1; lab[1:3, 1:4, 1:4] = 1; lab[3, 2, 1:3] = 1
    >>> [int((trim_z(lab, 0.3)[z] > 0).sum()) for z in range(4)]
    [0, 9, 9, 0]
    """
    if fraction <= 0 or labels.ndim != 3 or not labels.any():
        return labels
    n = int(labels.max()) + 1
    area = np.stack([np.bincount(plane.ravel(), minlength=n) for plane in labels], axis=1)  # (n, z)
    kept = area >= fraction * area.max(axis=1, keepdims=True)
    first = np.argmax(kept, axis=1)
    last = kept.shape[1] - 1 - np.argmax(kept[:, ::-1], axis=1)
    for z, plane in enumerate(labels):
        cut = (z < first) | (z > last)
        cut[0] = False
        if cut.any():
            plane[cut[plane]] = 0
    return labels


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Renumber labels to 1..N in order of first appearance of their ids (0 stays 0)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.uint32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
    return lut[labels], int(ids.size), ids


def label_components(semantic: np.ndarray, *, connectivity: int = 6) -> np.ndarray:
    """The thesis' labelling: connected components of the nucleus class (merges touching nuclei).

    Kept as a baseline to compare :func:`label_nuclei` against.
    """
    return cc3d.connected_components((semantic == NUCLEUS).astype(np.uint8), connectivity=connectivity).astype(np.uint32)


def label_with(probs: np.ndarray, labeling: LabelingConfig, voxel_size: Sequence[float], markers: np.ndarray | None = None) -> np.ndarray:
    """:func:`label_nuclei` with the parameters of a model card's ``labeling`` section."""
    return label_nuclei(
        probs,
        seed_threshold=labeling.seed_threshold,
        foreground_threshold=labeling.foreground_threshold,
        erode_xy=labeling.erode_xy,
        min_seed_size=labeling.min_seed_size,
        min_size=labeling.min_size,
        elevation=labeling.elevation,
        voxel_size=voxel_size,
        include_edge=bool(labeling.include_edge),
        seed_centre=labeling.seed_centre,
        seeds=labeling.seeds,
        seed_footprint=labeling.seed_footprint,
        seed_smooth=labeling.seed_smooth,
        markers=markers,
        z_trim=labeling.z_trim,
        min_peak=labeling.min_peak,
    )
