"""Instance masks -> cleaned instances + semantic target (0 background, 1 edge, 2 nucleus).

This is the thesis' ground-truth post-processing (sections 2.7 and 3.1), rewritten to
work on all labels at once. The thesis looped over every label and every slice in
Python; here each step is a handful of whole-volume numpy / scipy.ndimage operations,
so a 21x512x512 volume with 1,000 nuclei takes about a second instead of minutes.

Steps of :func:`prepare_target`:

1. **Small pieces per slice.** A label's 2D area in each z-slice is counted with one
   ``bincount`` over ``(z, label)`` pairs; pieces below ``min_area`` voxels are
   removed (thesis: 20).
2. **Smoothing, per slice (2D)**, because with 5 um z-steps a nucleus spans only two to
   four slices and any 3D kernel would erase it:

   - ``"majority"`` (default): a label-aware majority vote in a ``(2r+1)^2`` window.
     A voxel takes label ``l`` when ``l`` holds more than half of its window, else it
     becomes background. For one label this is exactly the thesis' "2D convolution
     with a small kernel, thresholded at one half"; a strict majority is unique, so
     doing it for all labels at once gives the same result as looping over them. It
     is computed as the window's median (a value that fills more than half of a
     window is its median) followed by a count of how often the median occurs.
     It removes spurs and pixel noise (convex artefacts) and also fills small notches.
   - ``"opening"``: a label-aware morphological opening with a disk of radius ``r``:
     a voxel survives erosion when its whole window carries its own label (window
     minimum equals maximum); the dilation back is a maximum filter, which can only
     restore a voxel's own label (two eroded cores are never within one window of a
     voxel), so it stays inside the original mask. Removes spurs, never adds voxels.
   - ``"none"``.

   Instance ids are kept.
3. **Small instances.** Whole instances below ``min_volume`` voxels are dropped.
4. **Edge class** from min/max filters on the label image (for all labels at once):

   - ``edge_mode="inner"`` (default): edge voxels are the instance's own voxels within
     ``edge_width`` (in-plane) of background or another label, so nucleus + edge is
     exactly the instance mask. We prefer it to the thesis' outer edge (dilation minus
     mask) because nuclei at 1.24 um are only 8-12 px across and pack densely: an
     outer ring has no room between touching nuclei (it must be carved out of the
     neighbour anyway), it inflates every mask by ~40% in area, and the instances would
     no longer be the masks the evaluation compares against. With inner edges the
     cleaned instances stay the reference, and instances are recovered from a
     prediction by labelling the nucleus cores and growing them into adjacent edge
     voxels by ``edge_width``.
   - ``edge_mode="outer"`` (thesis): background voxels within ``edge_width`` of an
     instance become edge, and so do instance voxels touching another instance.
   - ``edge_z`` decides what counts across slices (only the voxel directly above and
     below is compared): ``"contacts"`` (default) marks voxels whose z-neighbour
     belongs to a *different* instance, so nuclei stacked in z are separated too, but
     the top and bottom slices of a nucleus are not made all-edge; ``"all"`` treats
     background above/below as a boundary as well; ``"none"`` is purely per slice, as
     in the thesis.

   With the defaults, nucleus voxels of different instances are never adjacent within a
   slice (8-connectivity) nor directly above each other, so 6-connected components of
   the nucleus class never merge two nuclei. (A 3x3 window across z as well would also
   block diagonal contacts, but on densely packed synthetic spheroids it turned ~10% of
   the nuclei entirely into edge, against ~2% with the direct neighbour.)
   The volume border is not a boundary (filters use ``mode="nearest"``): a nucleus cut
   by the field of view gets no edge along the cut.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from pipeline.errors import InputError
from pipeline.groundtruth.trainset import class_balance

LOG = logging.getLogger(__name__)

Smooth = Literal["majority", "opening", "none"]
EdgeMode = Literal["inner", "outer"]
EdgeZ = Literal["contacts", "all", "none"]
_MAX = np.iinfo(np.uint32).max


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Validate a label image and return it as uint32.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer (or boolean) label image.
    name : str
        What to call the input in error messages (usually its file name).

    Raises
    ------
    InputError
        For float or other non-integer data, negative values, or ids beyond uint32.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint32)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"{name}: labels must be an integer image (0 = background), got {labels.dtype}; "
            "save masks as 8/16-bit (Fiji: Image > Type > 16-bit)"
        )
    if labels.size and labels.min() < 0:
        raise InputError(f"{name}: labels contain negative values (min {int(labels.min())})")
    if labels.size and int(labels.max()) > _MAX:
        raise InputError(f"{name}: label ids exceed the uint32 range")
    return labels.astype(np.uint32, copy=False)


def as_instances(
    labels: np.ndarray,
    *,
    kind: Literal["auto", "instances", "binary"] = "auto",
    connectivity: int = 6,
    name: str = "labels",
) -> tuple[np.ndarray, bool]:
    """Turn a mask into instance labels: binary masks are labelled by connected components.

    Parameters
    ----------
    labels : numpy.ndarray
        A boolean/binary mask (Labkit's export: 0 and one foreground value such as 1 or
        255) or an instance image (0 and one id per nucleus).
    kind : {"auto", "instances", "binary"}
        ``"auto"`` treats an image with a single non-zero value as binary.
    connectivity : {6, 18, 26}
        3D connectivity of the components (thesis: 6, MorphoLibJ).
    name : str
        Input name for error messages.

    Returns
    -------
    instances : numpy.ndarray
        uint32 instance labels.
    relabelled : bool
        Whether connected-component labelling was applied.
    """
    import cc3d

    labels = check_labels(labels, name)
    values = np.unique(labels)
    nonzero = values[values > 0]
    binary = kind == "binary" or (kind == "auto" and len(nonzero) <= 1)
    if not binary:
        return labels, False
    if connectivity not in (6, 18, 26):
        raise InputError(f"{name}: connectivity must be 6, 18 or 26, got {connectivity}")
    volume = labels if labels.ndim == 3 else labels.reshape((1,) * (3 - labels.ndim) + labels.shape)
    out = cc3d.connected_components(volume > 0, connectivity=connectivity, out_dtype=np.uint32)
    return out.reshape(labels.shape), True


def prepare_target(
    instances: np.ndarray,
    *,
    min_area: int = 20,
    smooth: Smooth = "majority",
    smooth_radius: int = 1,
    min_volume: int = 0,
    edge_width: int = 1,
    edge_mode: EdgeMode = "inner",
    edge_z: EdgeZ = "contacts",
) -> tuple[np.ndarray, np.ndarray]:
    """Clean instance masks and derive the 3-class semantic training target.

    Parameters
    ----------
    instances : numpy.ndarray
        ZYX (or YX) non-negative integer instance labels, 0 = background.
    min_area : int
        Per slice, pieces of a label with fewer voxels are removed (thesis: 20).
    smooth : {"majority", "opening", "none"}
        Per-slice, label-aware boundary smoothing (see the module docstring).
    smooth_radius : int
        Window half-size ``r`` of the smoothing (square ``2r+1`` for majority, disk of
        radius ``r`` for opening).
    min_volume : int
        Whole instances with fewer voxels after smoothing are dropped (0: keep all).
    edge_width : int
        In-plane width of the edge class in voxels.
    edge_mode : {"inner", "outer"}
        Edge voxels inside the instance (default) or outside it (thesis).
    edge_z : {"contacts", "all", "none"}
        What is a boundary across slices: only other instances, background too, nothing.

    Returns
    -------
    semantic : numpy.ndarray
        uint8, same shape: 0 background, 1 edge, 2 nucleus. Every nucleus voxel lies in
        exactly one instance; every instance voxel is nucleus or edge.
    cleaned : numpy.ndarray
        uint32 cleaned instances with the input's ids.

    Examples
    --------
    >>> lab = np.zeros((1, 9, 9), np.uint16); lab[0, 2:7, 2:7] = 3
    >>> sem, inst = prepare_target(lab, min_area=4)
    >>> sem[0, 4].tolist()
    [0, 0, 1, 2, 2, 2, 1, 0, 0]
    """
    for key, value, low in (("min_area", min_area, 0), ("smooth_radius", smooth_radius, 0), ("min_volume", min_volume, 0), ("edge_width", edge_width, 1)):
        if int(value) != value or value < low:
            raise InputError(f"{key} must be an integer >= {low}, got {value!r}")
    if smooth not in ("majority", "opening", "none"):
        raise InputError(f"smooth must be majority, opening or none, got {smooth!r}")
    if edge_mode not in ("inner", "outer") or edge_z not in ("contacts", "all", "none"):
        raise InputError(f"edge_mode {edge_mode!r} / edge_z {edge_z!r}: expected inner|outer and contacts|all|none")
    labels = check_labels(instances, "instances")
    if labels.ndim not in (2, 3):
        raise InputError(f"instances: expected a ZYX or YX label image, got shape {labels.shape}")
    shape = labels.shape
    lab = labels.reshape((1,) + shape) if labels.ndim == 2 else labels.copy()
    if min_area > 0:
        lab = remove_small_pieces(lab, min_area)
    if smooth == "majority" and smooth_radius > 0:
        lab = majority_smooth(lab, smooth_radius)
    elif smooth == "opening" and smooth_radius > 0:
        lab = label_opening(lab, smooth_radius)
    if min_volume > 0:
        lab = remove_small_instances(lab, min_volume)
    edge = edge_mask(lab, width=edge_width, mode=edge_mode, z=edge_z)
    semantic = np.where(lab > 0, np.uint8(2), np.uint8(0))
    semantic[edge] = 1
    return semantic.reshape(shape), lab.reshape(shape)


def _compact(lab: np.ndarray) -> tuple[np.ndarray, int]:
    """Label ids as small consecutive integers (for bincount) and their count."""
    top = int(lab.max()) if lab.size else 0
    if top < 4 * lab.size + 1024:
        return lab, top + 1
    values, inverse = np.unique(lab, return_inverse=True)
    if values[0] != 0:  # keep 0 = background
        inverse = inverse + 1
        return inverse.reshape(lab.shape), len(values) + 1
    return inverse.reshape(lab.shape), len(values)


def remove_small_pieces(lab: np.ndarray, min_area: int) -> np.ndarray:
    """Set to 0 every (slice, label) piece whose 2D area is below ``min_area`` (one bincount)."""
    ids, n = _compact(lab)
    key = np.arange(lab.shape[0], dtype=np.int64)[:, None, None] * n + ids
    area = np.bincount(key.ravel(), minlength=lab.shape[0] * n)
    small = (area < min_area)[key] & (lab > 0)
    out = lab.copy()
    out[small] = 0
    return out


def remove_small_instances(lab: np.ndarray, min_volume: int) -> np.ndarray:
    """Set to 0 every instance with fewer than ``min_volume`` voxels."""
    ids, n = _compact(lab)
    volume = np.bincount(ids.ravel(), minlength=n)
    small = (volume < min_volume)[ids] & (lab > 0)
    out = lab.copy()
    out[small] = 0
    return out


def majority_smooth(lab: np.ndarray, radius: int) -> np.ndarray:
    """Per-slice label-aware strict-majority filter in a ``(2r+1)^2`` window (edges: nearest).

    A voxel gets label ``l`` (including 0) when more than half of its window carries
    ``l``; where no label has a majority it becomes background.
    """
    k = 2 * radius + 1
    candidate = ndi.median_filter(lab, size=(1, k, k), mode="nearest")
    padded = np.pad(lab, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    count = np.zeros(lab.shape, np.uint16)
    ny, nx = lab.shape[1], lab.shape[2]
    for dy in range(k):
        for dx in range(k):
            count += padded[:, dy : dy + ny, dx : dx + nx] == candidate
    return np.where(2 * count > k * k, candidate, 0).astype(np.uint32)


def label_opening(lab: np.ndarray, radius: int) -> np.ndarray:
    """Per-slice morphological opening of every label at once with a disk of ``radius``."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    footprint = (yy**2 + xx**2 <= radius**2)[None]
    low = ndi.minimum_filter(lab, footprint=footprint, mode="nearest")
    high = ndi.maximum_filter(lab, footprint=footprint, mode="nearest")
    core = np.where(low == high, lab, 0).astype(np.uint32)
    return ndi.maximum_filter(core, footprint=footprint, mode="nearest")


def edge_mask(lab: np.ndarray, *, width: int = 1, mode: EdgeMode = "inner", z: EdgeZ = "contacts") -> np.ndarray:
    """Boolean edge class of a ZYX label image, for all labels at once.

    In-plane, a voxel is compared with the ``(2*width+1)^2`` window around it; across z,
    with the voxel directly above and below (a wider z window would turn whole slices of
    nuclei stacked in z into edge: at 5 um per slice their contact faces are large).

    Parameters
    ----------
    lab : numpy.ndarray
        uint32 ZYX labels.
    width : int
        In-plane edge width.
    mode, z : str
        See :func:`prepare_target`.
    """
    k = 2 * width + 1
    fg = lab > 0
    nonzero = np.where(fg, lab, _MAX).astype(np.uint32)  # background never counts as a smaller label
    windows = [(1, k, k)] + ([(3, 1, 1)] if z != "none" else [])
    edge = np.zeros(lab.shape, bool)
    for i, size in enumerate(windows):
        high = ndi.maximum_filter(lab, size=size, mode="nearest")
        low_nonzero = ndi.minimum_filter(nonzero, size=size, mode="nearest")
        edge |= fg & ((high > lab) | (low_nonzero < lab))  # another instance in the window
        if i == 0 or z == "all":  # background in the window (across z only for "all")
            if mode == "inner":
                edge |= fg & (ndi.minimum_filter(lab, size=size, mode="nearest") == 0)
            else:
                edge |= ~fg & (high > 0)
    return edge


def summarize(original: np.ndarray, cleaned: np.ndarray, semantic: np.ndarray) -> dict:
    """Counts and class balance of one prepared target (what the command logs and stores)."""
    n_in = int(np.count_nonzero(np.unique(original)))
    n_out = int(np.count_nonzero(np.unique(cleaned)))
    return {
        "shape": list(semantic.shape),
        "instances_in": n_in,
        "instances_out": n_out,
        "instances_removed": n_in - n_out,
        "class_balance": class_balance(semantic),
        "voxels": {"foreground_in": int(np.count_nonzero(original)), "foreground_out": int(np.count_nonzero(cleaned))},
    }
