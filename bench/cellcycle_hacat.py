"""spheroid's phase calls and tracks on fucciphase's HaCaT example, against fucciphase and TrackMate.

    python bench/cellcycle_hacat.py [--data ../shared/data/fucci-hacat-timelapse-2d]

The data (fucciphase 0.0.3 ``examples/``, BSD-3): a 2-D HaCaT FUCCI colony, 121 frames
(15 min apart, fucciphase's ``-dt 0.25``), 256 x 256 px at 0.544 um (downscaled from
2048 px at 0.068 um), channel 0 = TrackMate's CH1 = the S/G2/M reporter (fucciphase's
"magenta", ``-m MEAN_INTENSITY_CH1``), channel 1 = CH2 = the G1 reporter ("cyan",
``-c MEAN_INTENSITY_CH2``: it rises first in ``hacat_fucciphase_reference.csv``),
channel 2 = the label image (= ``labels.tif``) that TrackMate's label-image detector
turned into spots, whose ``MEAN_INTENSITY_CH3`` is the label: spots and labels are the
same 810 detections. The TrackMate XML holds the tracks (made at full resolution).

* **Phases.** fucciphase 0.1.0's documented method on its own example, through its API
  as its command line runs it (``process_trackmate`` with the sensor file, thresholds
  ``[0.1, 0.1]``, unique tracks): per-track Savitzky-Golay smoothing, min-max
  normalisation per channel, ON above 10 % of the maximum -> ``DISCRETE_PHASE_MAX``;
  against spheroid's single-frame calls (``cellcycle`` on the raw image and labels, 2-D)
  and its calls along its own tracks (``phase_track``). fucciphase's 2-colour sensor has
  no early-G1 (both off is G1), so spheroid's early-G1 counts as G1 in the comparison.
* **Tracks.** spheroid's tracker (laptrack, the FUCCI division check, defaults in um) on
  the 810 detections with ids as in ``labels.tif``, against the TrackMate tracks: link
  and division F1 and the CTC measures (py-ctcmetrics).

Needs ``pip install 'spheroid[fucciphase]'`` for the fucciphase half. Writes
``bench/results/cellcycle_hacat.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pipeline.cellcycle.model import apply_phase_model, fit_phase_model  # noqa: E402
from pipeline.cellcycle.nuclei import measure_nuclei  # noqa: E402
from pipeline.cellcycle.track import smooth_if_possible, track_table  # noqa: E402
from pipeline.cellcycle.validate import ctc_scores, link_scores, tracks_from_links  # noqa: E402
from pipeline.config.cellcycle import CellcycleConfig, TrackConfig  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "fucci-hacat-timelapse-2d"
PIXEL_UM = 0.544
FRAME_S = 900.0
CHANNELS = ["sgm", "g1"]  # image channel 0: S/G2/M reporter (CH1), 1: G1 reporter (CH2)
LOG = logging.getLogger("cellcycle_hacat")


def read_data(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    image = tifffile.imread(folder / "downscaled_hacat.ome.tif")  # T, C, Y, X
    labels = tifffile.imread(folder / "labels.tif")  # T, Y, X
    if not np.array_equal(image[:, 2], labels):
        raise SystemExit("labels.tif differs from the image's label channel")
    return image[:, :2], labels


def spheroid_phases(image: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """spheroid's measurement and single-frame calls on every frame (one model for the series)."""
    config = CellcycleConfig(channels={"nuclear": "g1", "red": "g1", "green": "sgm"})
    frames = [measure_nuclei(labels[t], image[t], CHANNELS, voxel_size=(0.0, PIXEL_UM, PIXEL_UM), t=t) for t in range(labels.shape[0])]
    table = pd.concat(frames, ignore_index=True)
    model = fit_phase_model(table, config)
    LOG.info("thresholds: G1 reporter %.0f, S/G2/M reporter %.0f", 10 ** model.thresholds["red"].threshold, 10 ** model.thresholds["green"].threshold)
    return apply_phase_model(table, model)


def trackmate(folder: Path) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """Spots (``t``, ``label``, TrackMate's spot id) and links (spot id -> spot id)."""
    with gzip.open(folder / "merged_linked.ome.xml.gz") as fh:
        root = ET.parse(fh).getroot()
    spots = [
        {"spot": int(s.get("ID")), "t": int(float(s.get("FRAME"))), "label": int(round(float(s.get("MEAN_INTENSITY_CH3"))))}
        for s in root.iter("Spot")
    ]
    links = [(int(float(e.get("SPOT_SOURCE_ID"))), int(float(e.get("SPOT_TARGET_ID")))) for e in root.iter("Edge")]
    return pd.DataFrame(spots), links


def fucciphase_phases(folder: Path, out_dir: Path) -> pd.DataFrame:
    """fucciphase's calls on its example, as its command line makes them."""
    from fucciphase import process_trackmate
    from fucciphase.sensor import FUCCISASensor

    xml = out_dir / "merged_linked.ome.xml"
    with gzip.open(folder / "merged_linked.ome.xml.gz") as src, open(xml, "wb") as dst:
        shutil.copyfileobj(src, dst)
    sensor = FUCCISASensor(**json.loads((folder / "fuccisa_hacat.json").read_text()))
    df = process_trackmate(
        xml,
        channels=["MEAN_INTENSITY_CH2", "MEAN_INTENSITY_CH1"],  # cyan (G1), magenta (S/G2/M)
        sensor=sensor,
        thresholds=[0.1, 0.1],
        generate_unique_tracks=True,
        output_dir=out_dir,
    )
    df["t"] = df["FRAME"].astype(int)
    df["label"] = df["MEAN_INTENSITY_CH3"].round().astype(int)
    return df[["t", "label", "DISCRETE_PHASE_MAX", "CELL_CYCLE_PERC"]].rename(columns={"DISCRETE_PHASE_MAX": "fucciphase", "CELL_CYCLE_PERC": "fucciphase_percent"})


def compare_phases(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict:
    both = ours.merge(theirs, on=["t", "label"], how="inner", validate="one_to_one")
    out = {"nuclei": int(len(both))}
    for column in ("phase", "phase_track"):
        if column not in both:
            continue
        mine = both[column].replace({"early-G1": "G1"})
        table = pd.crosstab(pd.Series(both["fucciphase"].to_numpy(), name="fucciphase"), pd.Series(mine.to_numpy(), name="spheroid"))
        out[column] = {"agreement": float((mine.to_numpy() == both["fucciphase"].to_numpy()).mean()), "confusion": table.to_dict()}
        LOG.info("%s vs fucciphase: agreement %.3f\n%s", column, out[column]["agreement"], table.to_string())
    out["fractions"] = {
        "fucciphase": both["fucciphase"].value_counts(normalize=True).to_dict(),
        "spheroid_phase": both["phase"].value_counts(normalize=True).to_dict(),
        **({"spheroid_phase_track": both["phase_track"].value_counts(normalize=True).to_dict()} if "phase_track" in both else {}),
    }
    return out


def compare_tracks(ours: pd.DataFrame, spots: pd.DataFrame, links) -> dict:
    spots = spots.assign(node=spots["spot"])
    truth = tracks_from_links(spots[["t", "label", "node"]], links)
    pred = ours.merge(spots[["t", "label", "node"]], on=["t", "label"], how="inner", validate="one_to_one")
    sc = link_scores(truth, pred)
    ctc = ctc_scores(truth, pred)
    out = {"link": sc["link"], "division": sc["division"], **ctc, "trackmate_tracks": int(truth["track_id"].nunique()), "spheroid_tracks": int(pred["track_id"].nunique())}
    LOG.info("tracks vs TrackMate: link F1 %.3f, division F1 %.3f (%d of %d), TRA %.3f", sc["link"]["f1"], sc["division"]["f1"], sc["division"]["tp"], sc["division"]["true"], ctc["TRA"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.exists():
        raise SystemExit(f"{args.data}: no such folder")
    image, labels = read_data(args.data)
    table = spheroid_phases(image, labels)
    tracked = track_table(table, TrackConfig())
    spots, links = trackmate(args.data)
    result = {"frames": int(labels.shape[0]), "detections": int(len(table)), "tracks": compare_tracks(tracked, spots, links)}
    # along TrackMate's own tracks too: the phase calls without spheroid's tracking errors
    on_truth = tracks_from_links(spots.assign(node=spots["spot"])[["t", "label", "node"]], links)
    along_trackmate = smooth_if_possible(
        table.merge(on_truth[["t", "label", "track_id", "parent_track_id"]], on=["t", "label"]), TrackConfig()
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            theirs = fucciphase_phases(args.data, Path(tmp))
        result["phases"] = compare_phases(tracked, theirs)
        result["phases_along_trackmate_tracks"] = compare_phases(along_trackmate[["t", "label", "phase_track"]].assign(phase=along_trackmate["phase"]), theirs)
    except ImportError:
        LOG.warning("fucciphase is not installed (pip install 'spheroid[fucciphase]'): phases not compared")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cellcycle_hacat.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
