"""From simulated nuclei to voxels: instance labels, optics and the detector.

Pure functions over numpy arrays. :func:`rasterize` loops over nuclei, but each
one only touches its own small bounding box; every other step is vectorised over
the whole stack.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

REFERENCE_VOXELS = 21 * 512 * 512
"""Stack size the artefact count refers to (the thesis' 21 x 512 x 512)."""
EXACT_POISSON_BELOW = 30.0
"""Expected photo-electron counts below this are Poisson-sampled exactly; above it the
normal approximation N(lambda, lambda) is used (indistinguishable there, and ~10x faster)."""


def rasterize(
    centers: np.ndarray,
    axes: np.ndarray,
    angles: np.ndarray,
    ids: np.ndarray,
    shape: tuple[int, int, int],
    voxel_size: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ellipsoidal nuclei into an instance label volume that partitions space.

    A voxel belongs to the nucleus whose ellipsoid it lies deepest in: the one with
    the smallest normalised squared distance ``d2 = (u/a)^2 + (v/b)^2 + (z/c)^2 < 1``.
    Overlapping ellipsoids therefore meet along a shared face (touching nuclei)
    and no voxel has two labels.

    Parameters
    ----------
    centers : numpy.ndarray
        ``(N, 3)`` centres in um, ``(z, y, x)``, with voxel ``(0, 0, 0)`` centred at 0.
    axes : numpy.ndarray
        ``(N, 3)`` semi-axes in um: z, the long and the short axis in the y/x plane.
    angles : numpy.ndarray
        ``(N,)`` angle (radians) of the long axis from the y axis towards x.
    ids : numpy.ndarray
        ``(N,)`` label values (> 0).
    shape : tuple of int
        ``(z, y, x)`` output shape.
    voxel_size : tuple of float
        ``(z, y, x)`` voxel size in um.

    Returns
    -------
    labels : numpy.ndarray
        uint32 instance labels, 0 for background.
    d2 : numpy.ndarray
        float32 normalised squared distance to the owning nucleus' centre (1 outside nuclei).
    """
    labels = np.zeros(shape, dtype=np.uint32)
    best = np.ones(shape, dtype=np.float32)
    vz, vy, vx = (float(v) for v in voxel_size)
    centers_px = np.asarray(centers, dtype=float) / np.asarray(voxel_size, dtype=float)
    reach = np.asarray(axes, dtype=float).copy()
    reach[:, 1] = np.maximum(reach[:, 1], reach[:, 2])
    lo = np.ceil(centers_px - reach[:, [0, 1, 1]] / np.array([vz, vy, vx])).astype(int)
    hi = np.floor(centers_px + reach[:, [0, 1, 1]] / np.array([vz, vy, vx])).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(shape))
    keep = np.flatnonzero(np.all(hi > lo, axis=1))
    grid = [np.arange(n, dtype=float) for n in shape]
    rows = zip(
        lo[keep].tolist(),
        hi[keep].tolist(),
        centers_px[keep].tolist(),
        np.asarray(axes, dtype=float)[keep].tolist(),
        np.cos(angles[keep]).tolist(),
        np.sin(angles[keep]).tolist(),
        np.asarray(ids)[keep].tolist(),
    )
    for (z0, y0, x0), (z1, y1, x1), (cz, cy, cx), (c, a, b), cos, sin, label in rows:
        dz = ((grid[0][z0:z1] - cz) * (vz / c)) ** 2
        dy = ((grid[1][y0:y1] - cy) * vy)[:, None]
        dx = ((grid[2][x0:x1] - cx) * vx)[None, :]
        u = (dy * (cos / a) + dx * (sin / a)) ** 2
        u += (dx * (cos / b) - dy * (sin / b)) ** 2
        d2 = u[None, :, :] + dz[:, None, None]
        box_best = best[z0:z1, y0:y1, x0:x1]
        take = d2 < box_best
        box_best[take] = d2[take]
        labels[z0:z1, y0:y1, x0:x1][take] = label
    return labels, best


def gaussian_peak(sigma_px: tuple[float, ...], truncate: float = 3.0) -> float:
    """Peak value left by :func:`psf_blur` from a unit spike (the product of kernel centres)."""
    peak = 1.0
    for s in sigma_px:
        if s <= 0:
            continue
        radius = int(truncate * s + 0.5)
        x = np.arange(-radius, radius + 1, dtype=float)
        peak /= np.exp(-0.5 * (x / s) ** 2).sum()
    return peak


def psf_sigma_px(sigma_um: tuple[float, float, float], voxel_size: tuple[float, float, float]) -> tuple[float, float, float]:
    """PSF standard deviation in voxels, ``(z, y, x)``."""
    return tuple(float(s) / float(v) for s, v in zip(sigma_um, voxel_size))


def psf_blur(volume: np.ndarray, sigma_um: tuple[float, float, float], voxel_size: tuple[float, float, float], truncate: float = 3.0) -> np.ndarray:
    """Blur a ``(z, y, x)`` volume with an anisotropic Gaussian PSF given in micrometres.

    Parameters
    ----------
    volume : numpy.ndarray
        Object intensities (any real dtype).
    sigma_um : tuple of float
        PSF standard deviation ``(z, y, x)`` in um (confocal: several times larger in z).
    voxel_size : tuple of float
        ``(z, y, x)`` voxel size in um.
    truncate : float
        Kernel half-width in standard deviations.

    Returns
    -------
    numpy.ndarray
        float32 blurred volume of the same shape.
    """
    sigma = psf_sigma_px(sigma_um, voxel_size)
    return ndi.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma, truncate=truncate, mode="nearest")


def depth_attenuation(n_slices: int, z_step_um: float, length_um: float) -> np.ndarray:
    """``(Z,)`` factors ``exp(-z / length)`` for slice depths ``z = k * z_step`` (um)."""
    return np.exp(-np.arange(n_slices) * (z_step_um / length_um)).astype(np.float32)


def vignetting(shape_yx: tuple[int, int], strength: float) -> np.ndarray:
    """``(Y, X)`` illumination: 1 at the centre, ``1 - strength`` in the corners (quadratic)."""
    y = np.linspace(-1.0, 1.0, shape_yx[0], dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, shape_yx[1], dtype=np.float32)[None, :]
    return (1.0 - strength * (y**2 + x**2) / 2.0).astype(np.float32)


def ellipsoid_mask(shape: tuple[int, int, int], voxel_size: tuple[float, float, float], center, radii, edge_um: float = 5.0) -> np.ndarray:
    """Soft ``(z, y, x)`` mask of an ellipsoid in um: 1 inside, ramping to 0 over ``edge_um`` at the surface."""
    parts = []
    for n, v, c, r in zip(shape, voxel_size, center, radii):
        parts.append((((np.arange(n) * v - c) / r) ** 2).astype(np.float32))
    mask = parts[0][:, None, None] + parts[1][None, :, None]
    mask = mask + parts[2][None, None, :]
    np.sqrt(mask, out=mask)
    k = np.float32(min(radii) / edge_um)
    mask *= -k
    mask += k + np.float32(0.5)
    return np.clip(mask, 0.0, 1.0, out=mask)


def detector(expected: np.ndarray, gain: float, read_noise: float, saturation: int, rng: np.random.Generator) -> np.ndarray:
    """Photon shot noise, read noise, quantisation and saturation.

    Parameters
    ----------
    expected : numpy.ndarray
        Expected signal (ADU, float32), background included.
    gain : float
        ADU per photo-electron.
    read_noise : float
        Standard deviation of the additive Gaussian read noise (ADU).
    saturation : int
        Largest recordable value; brighter voxels are clipped to it.
    rng : numpy.random.Generator
        Random stream.

    Returns
    -------
    numpy.ndarray
        uint16 image.
    """
    out = np.maximum(np.asarray(expected, dtype=np.float32), np.float32(0.0))
    low = out < np.float32(EXACT_POISSON_BELOW * gain)
    low_idx = np.flatnonzero(low) if low.any() else None
    exact = None
    if low_idx is not None:
        lam = out.reshape(-1)[low_idx] / np.float32(gain)
        exact = rng.poisson(lam).astype(np.float32) * np.float32(gain)
        exact += np.float32(read_noise) * rng.standard_normal(lam.size, dtype=np.float32)
    # shot noise (variance gain * signal) and read noise combined in one normal draw
    std = out * np.float32(gain)
    std += np.float32(read_noise**2)
    np.sqrt(std, out=std)
    std *= rng.standard_normal(out.shape, dtype=np.float32)
    out += std
    if exact is not None:
        out.reshape(-1)[low_idx] = exact
    np.rint(out, out=out)
    np.clip(out, 0, saturation, out=out)
    return out.astype(np.uint16)


def artefact_sites(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of ``count`` random voxels outside nuclei (fewer if they land in nuclei)."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    sites = rng.integers(0, labels.size, size=count)
    return sites[labels.ravel()[sites] == 0]


def render_channel(
    labels: np.ndarray,
    d2: np.ndarray,
    amplitude: np.ndarray,
    *,
    inside: np.ndarray,
    texture: np.ndarray | None,
    rim: float,
    diffuse: np.ndarray | None,
    spikes: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Object intensities of one channel before blurring (float32).

    Parameters
    ----------
    labels, d2 : numpy.ndarray
        Output of :func:`rasterize`.
    amplitude : numpy.ndarray
        Peak intensity per label value (index 0 is ignored).
    inside : numpy.ndarray
        ``flatnonzero(labels)``: the nucleus voxels.
    texture : numpy.ndarray, optional
        Multiplicative texture, one value per nucleus voxel (in ``flatnonzero(labels)`` order).
    rim : float
        Relative dimming at a nucleus' boundary (``1 - rim * d2``).
    diffuse : numpy.ndarray, optional
        Intensity added outside nuclei (cytoplasm), full volume.
    spikes : tuple, optional
        ``(flat indices, intensities)`` of point artefacts.
    """
    obj = np.zeros(labels.shape, dtype=np.float32)
    flat = obj.reshape(-1)
    values = amplitude[labels.reshape(-1)[inside]].astype(np.float32) * (1.0 - rim * d2.reshape(-1)[inside])
    if texture is not None:
        values *= texture
    flat[inside] = values
    if diffuse is not None:
        obj += diffuse
        flat[inside] -= diffuse.reshape(-1)[inside]
    if spikes is not None and spikes[0].size:
        np.add.at(flat, spikes[0], spikes[1].astype(np.float32))
    return obj
