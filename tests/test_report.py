"""The report: geometry, tables, comparisons, files, and the page in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config.experiment import WellLayout, layout_rows
from pipeline.config.report import DepthConfig, ReportConfig
from pipeline.io.ngff import ImageMeta
from pipeline.io.plate import Plate
from pipeline.io.tables import write_table
from pipeline.io.volumes import write_volume
from pipeline.report.tables import CATEGORIES, PHASES, hull_geometry

SHAPE = (3, 3, 8, 48, 48)  # t, c, z, y, x
VOXEL = (5.0, 1.24, 1.24)
WELLS = {"B2": 0.0, "B3": 0.0, "C2": 0.3, "C3": 3.0, "C4": 30.0}
G1_SHARE = {0.0: 0.3, 0.3: 0.4, 3.0: 0.7, 30.0: 0.9}


def test_hull_depth_is_distance_to_the_surface_and_ignores_cut_faces():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(4000, 3))
    pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) * (50 * rng.random(4000)[:, None] ** (1 / 3))
    pts[:1500] *= 50 / np.linalg.norm(pts[:1500], axis=1, keepdims=True)  # nuclei at the rim too
    pts = np.vstack([pts, [[0.0, 0.0, 0.0]]]) + 60.0
    volume, radius, depth = hull_geometry(pts, (200.0, 200.0, 200.0), DepthConfig(cut_faces=[]))
    assert volume == pytest.approx(4 / 3 * np.pi * 50**3, rel=0.05) and radius == pytest.approx(50, rel=0.05)
    assert depth[-1] == pytest.approx(50, rel=0.05)  # the centre
    # cut the ball by the top of a stack at z = 60 (its centre): the cut is not the surface
    half = pts[pts[:, 0] <= 60.0]
    _, _, d_cut = hull_geometry(half, (60.0, 200.0, 200.0), DepthConfig(cut_faces=["top"], cut_margin_um=5.0))
    _, _, d_flat = hull_geometry(half, (60.0, 200.0, 200.0), DepthConfig(cut_faces=[]))
    assert d_cut[-1] == pytest.approx(50, rel=0.08) and d_flat[-1] < 1.0
    assert np.isnan(hull_geometry(pts[:3], (1, 1, 1), DepthConfig())[2]).all()


def make_store(root: Path) -> Plate:
    """Five wells with ball-shaped label images and nucleus tables whose G1 share grows with dose."""
    rng = np.random.default_rng(5)
    plate = Plate.create(str(root / "plate.zarr"), name="report-test")
    zz, yy, xx = np.mgrid[: SHAPE[2], : SHAPE[3], : SHAPE[4]]
    for w, (well, dose) in enumerate(WELLS.items()):
        fld = plate.add_field(well, 0)
        fld.create_image("raw", SHAPE, "uint16", ImageMeta(channels=("Hoechst", "Cy3", "GFP"), voxel_size=VOXEL, time_step=1800.0), chunk_yx=(48, 48))
        fld.create_labels("nuclei", (SHAPE[0], 1, *SHAPE[2:]), ImageMeta(channels=("nuclei",), voxel_size=VOXEL, time_step=1800.0), chunk_yx=(48, 48))
        rows, tracks = [], []
        for t in range(SHAPE[0]):
            n = 40 + 8 * t - int(dose) // 3
            centres = np.column_stack([rng.uniform(1, 7, n), rng.uniform(5, 43, n), rng.uniform(5, 43, n)])
            labels = np.zeros(SHAPE[2:], np.uint32)
            for i, (cz, cy, cx) in enumerate(centres, start=1):
                labels[((zz - cz) ** 2 / 1.0 + (yy - cy) ** 2 / 4.0 + (xx - cx) ** 2 / 4.0) <= 1.0] = i
            write_volume(plate.location, f"{fld.label_path('nuclei')}/0", t, 0, labels)
            for c in range(3):
                write_volume(plate.location, fld.array_path("raw"), t, c, (200 + 1000 * (labels > 0) + rng.integers(0, 50, labels.shape)).astype(np.uint16))
            g1 = rng.random(n) < G1_SHARE[dose]
            other = rng.choice(["early-G1", "G1/S", "S/G2/M"], n)
            rows.append(pd.DataFrame({
                "t": t, "label": np.arange(1, n + 1), "centroid_z": centres[:, 0] * VOXEL[0], "centroid_y": centres[:, 1] * VOXEL[1],
                "centroid_x": centres[:, 2] * VOXEL[2], "phase": np.where(g1, "G1", other), "dead": rng.random(n) < 0.05,
            }))
        for i in range(6):
            tracks.append({"track_id": i + 1, "complete": i < 4, **{f"hours_{p}": float(rng.integers(1, 6)) for p in PHASES}})
        fld.mark_complete("raw")
        fld.mark_complete("nuclei", label=True)
        write_table(fld, "nuclei", pd.concat(rows, ignore_index=True))
        write_table(fld, "tracks", pd.DataFrame(tracks))
    return plate


LAYOUT = {"B2": WellLayout(control=True), "B3": WellLayout(control=True)} | {
    w: WellLayout(drug="d", dose=d, unit="uM") for w, d in WELLS.items() if d > 0
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from pipeline.report.run import write_report

    root = tmp_path_factory.mktemp("report")
    plate = make_store(root)
    config = ReportConfig.model_validate({"dose_response": {"min_doses": 4}})
    result = write_report(plate, config, layout=layout_rows(LAYOUT, list(WELLS)), title="test plate", extra={"note": "x"})
    return plate, result


@pytest.mark.slow
def test_tables_rows_and_fractions(report):
    plate, result = report
    folder = Path(result.folder)
    long = pd.read_parquet(folder / "timecourse.parquet")
    assert len(long) == len(WELLS) * SHAPE[0] * len(CATEGORIES)  # one row per well x time x phase
    assert set(long["phase"]) == set(CATEGORIES)
    phases = long[long["phase"] != "dead"].groupby(["well", "t"])["fraction"].sum()
    np.testing.assert_allclose(phases.to_numpy(), 1.0)
    assert (long["growth"] > 0).all() and long["spheroid_radius_um"].notna().all()
    wells = pd.read_csv(folder / "wells.csv")
    assert list(wells["well"]) == list(WELLS)
    g1 = wells.set_index("well")["g1_fraction"]
    assert g1["C4"] > g1["C3"] > g1["B2"] - 0.15
    assert wells.set_index("well").loc[["B2", "B3"], "delta_g1"].mean() == pytest.approx(0.0, abs=1e-12)
    conditions = pd.read_parquet(folder / "conditions.parquet")
    control = conditions[conditions["condition"] == "control"]
    assert (control["n_wells"] == 2).all() and control["delta_g1_mean"].abs().max() < 1e-12 and control["fraction_G1_sd"].notna().all()
    depth = pd.read_parquet(folder / "depth.parquet")
    assert {"depth_class", "phase", "fraction"} <= set(depth.columns) and depth["depth_class"].iloc[0] == "0-20"
    fits = pd.read_csv(folder / "doseresponse.csv")
    assert list(fits["readout"]) == ["g1_fraction", "growth"] and (fits["status"] == "too few doses").all()
    assert fits["ec50"].isna().all()
    durations = pd.read_parquet(folder / "durations.parquet")
    assert set(durations["phase"]) == set(PHASES) and (durations["n_tracks"] == durations.groupby("condition")["n_tracks"].transform("max")).all()
    record = json.loads((folder / "provenance.json").read_text())
    assert record["stage"] == "report" and record["note"] == "x" and "matplotlib" in record["libraries"]
    assert pd.read_parquet(folder / "wells.parquet").attrs["spheroid"]["stage"] == "report"


@pytest.mark.slow
def test_page_is_self_contained(report):
    _, result = report
    html = Path(result.folder, "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith("data:") for s in sources)
    assert "http://" not in html and "https://" not in html
    assert len(re.findall(r'<img class="thumb"', html)) == len(WELLS)
    pngs = sorted(p.name for p in Path(result.folder, "figures").glob("*.png"))
    assert pngs == sorted(["growth.png", "spheroid.png", "phases.png", "depth.png", "durations.png", "controls.png", "doseresponse_d.png"])


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)")
    return path


@pytest.mark.slow
def test_page_in_a_real_browser(report, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, result = report
    url = Path(result.folder, "index.html").resolve().as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_load_state("load")
            assert errors == []
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
            assert len(images) == len(WELLS) + 7
            assert all(done and width > 0 for _, done, width in images), images
            wells = lambda: page.evaluate("Array.from(document.querySelectorAll('#wells tbody tr')).map(r => r.cells[1].textContent)")  # noqa: E731
            g1 = lambda: page.evaluate("Array.from(document.querySelectorAll('#wells tbody tr')).map(r => parseFloat(r.cells[11].dataset.value))")  # noqa: E731
            assert wells() == list(WELLS)
            header = page.locator("#wells th", has_text="G1 fraction")
            header.click()
            assert g1() == sorted(g1()) and wells() != list(WELLS)
            header.click()
            assert g1() == sorted(g1(), reverse=True)
            page.locator("#wells th", has_text="well").first.click()
            assert wells() == sorted(WELLS)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert (tmp_path / "report.png").stat().st_size > 10_000
        finally:
            browser.close()
