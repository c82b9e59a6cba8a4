"""Phase fractions by depth from the rim on the real FUCCI spheroid sections (Browning et al. 2021).

    python bench/cellcycle_sections.py [--data ../shared/data/fucci-spheroid-sections-2d]

The sections (CYX, uint8, 1.243 um/px; channels DAPI, FUCCI green, FUCCI red, DRAQ7)
come without nucleus labels, so nuclei are found here by a plain classical 2-D method
(scikit-image), good enough for this figure and documented as such: on the brighter of
DAPI and DRAQ7 (each scaled by its 99.5th percentile; dead nuclei of the necrotic core
lose DAPI but take DRAQ7), smoothed
(Gaussian, 1 px), white top-hat (disk of 8 px) to remove the spheroid's diffuse glow,
Otsu threshold, holes filled, touching nuclei split by a watershed on
the distance transform (seeds: local maxima at least 3 px apart), objects under 12 px
dropped. The spheroid is the largest object of the Otsu mask of all channels summed,
closed and filled; depth from the rim is the Euclidean distance to its edge in um.

Each section's nuclei then go through the same code as ``spheroid cellcycle``
(``pipeline.cellcycle.files.cellcycle_files``: local background, median, Otsu on log10,
DRAQ7 as the dead stain), one model per section. Writes
``docs/figures/cellcycle_sections.png`` and ``bench/results/cellcycle_sections.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CHANNELS = ["dapi", "green", "red", "draq7"]
PIXEL_UM = 1.243
BINS_UM = (0, 25, 50, 75, 100, 150, 200, 300)


def segment_nuclei(dapi: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import disk, white_tophat
    from skimage.segmentation import watershed

    smooth = gaussian(dapi.astype(np.float32), 1.0, preserve_range=True)
    flat = white_tophat(smooth, disk(8))  # the spheroid's diffuse glow out, nuclei (~8 px) kept
    mask = ndi.binary_fill_holes(flat > threshold_otsu(flat))
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=3, labels=ndi.label(mask)[0], exclude_border=False)
    markers = np.zeros(dapi.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=mask)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < 12] = 0
    return labels.astype(np.uint32)


def spheroid_depth(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    total = image.astype(np.float32).sum(axis=0)
    mask = total > threshold_otsu(total)
    mask = ndi.binary_fill_holes(ndi.binary_closing(mask, iterations=5))
    lab, n = ndi.label(mask)
    if n > 1:
        mask = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    return ndi.distance_transform_edt(mask) * PIXEL_UM


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import tifffile

    from pipeline.cellcycle.durations import phase_fractions
    from pipeline.cellcycle.files import cellcycle_files
    from pipeline.cellcycle.phase import PHASES
    from pipeline.config.cellcycle import CellcycleConfig
    from pipeline.groundtruth.tiffio import write_tiff

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "fucci-spheroid-sections-2d"))
    args = parser.parse_args()
    config = CellcycleConfig(channels={"nuclear": "dapi", "red": "red", "green": "green", "dead": "draq7"})
    files = sorted(Path(args.data).glob("ExpL_*.tif"))
    results, tables = {}, []
    fig, axes = plt.subplots(2, len(files), figsize=(5 * len(files), 9))
    with tempfile.TemporaryDirectory() as tmp:
        for k, path in enumerate(files):
            image = tifffile.imread(path)
            # dead nuclei of the necrotic core lose DAPI but take DRAQ7: segment on both
            stains = image[[0, 3]].astype(np.float32)
            stains /= np.maximum(np.percentile(stains, 99.5, axis=(1, 2), keepdims=True), 1.0)
            labels = segment_nuclei(stains.max(axis=0))
            depth = spheroid_depth(image)
            lab_path = write_tiff(Path(tmp) / f"{path.stem}_labels.tif", labels.astype(np.uint16))
            table = cellcycle_files(path, lab_path, CHANNELS, Path(tmp) / f"{path.stem}.csv", config, voxel_size=(1.0, PIXEL_UM, PIXEL_UM))
            cy = np.clip(np.round(table["centroid_y"] / PIXEL_UM).astype(int), 0, depth.shape[0] - 1)
            cx = np.clip(np.round(table["centroid_x"] / PIXEL_UM).astype(int), 0, depth.shape[1] - 1)
            table["depth_um"] = depth[cy, cx]
            table = table[table["depth_um"] > 0].copy()
            table["depth_bin"] = pd.cut(table["depth_um"], BINS_UM, right=False).astype(str)
            frac = phase_fractions(table, by=["depth_bin"])
            results[path.name] = {"nuclei": int(len(table)), "dead": int(table["dead"].sum()), "fractions_by_depth": frac.to_dict(orient="records")}
            tables.append(table.assign(section=path.name))
            rgb = np.stack([image[2], image[1], image[3]], axis=-1).astype(np.float32)
            axes[0, k].imshow(np.clip(rgb / np.percentile(rgb, 99.5, axis=(0, 1)), 0, 1))
            colors = {"early-G1": "white", "G1": "red", "G1/S": "yellow", "S/G2/M": "lime"}
            live = table[~table["dead"]]
            axes[0, k].scatter(live["centroid_x"] / PIXEL_UM, live["centroid_y"] / PIXEL_UM, s=2, c=live["phase"].map(colors))
            dead = table[table["dead"]]
            axes[0, k].scatter(dead["centroid_x"] / PIXEL_UM, dead["centroid_y"] / PIXEL_UM, s=2, c="blue")
            axes[0, k].set_title(f"{path.stem}: {len(table)} nuclei, {int(table['dead'].sum())} dead (blue)")
            axes[0, k].axis("off")
            centers = [(a + b) / 2 for a, b in zip(BINS_UM[:-1], BINS_UM[1:])]
            order = [str(pd.Interval(a, b, closed="left")) for a, b in zip(BINS_UM[:-1], BINS_UM[1:])]
            frac = frac.set_index("depth_bin").reindex(order)
            for p in PHASES:
                axes[1, k].plot(centers, frac[p], marker="o", label=p, color={"early-G1": "grey", "G1": "red", "G1/S": "orange", "S/G2/M": "green"}[p])
            axes[1, k].plot(centers, frac["dead"] / (frac["dead"] + frac["live"]), marker="s", ls="--", color="blue", label="dead (of all)")
            axes[1, k].set_xlabel("depth from the rim (um)")
            axes[1, k].set_ylabel("fraction of live nuclei")
            axes[1, k].legend(fontsize=8)
            print(f"{path.name}: {len(table)} nuclei, {int(table['dead'].sum())} dead")
            print(frac[["live", "dead", *PHASES]].round(2).to_string())
    out = HERE.parent / "docs" / "figures"
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / "cellcycle_sections.png", dpi=70)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cellcycle_sections.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
