"""Write the report of a plate: tables (Parquet and CSV), figures (PNG) and ``index.html``.

Reads the per-field tables written by ``spheroid cellcycle`` and ``spheroid track``, the
image metadata, and one middle slice per well for the thumbnails; computes the tables
(:mod:`~pipeline.report.tables`, :mod:`~pipeline.report.compare`), the dose-response fits
(:mod:`~pipeline.report.doseresponse`), the figures and the page, into a scratch folder
that replaces ``<store>/report/`` at the end (a failed run leaves the previous report).

Files (``report/``)::

    index.html                 the page (self-contained)
    timecourse.parquet/.csv    one row per well x time point x phase (and dead)
    wells.parquet/.csv         one row per well: read-outs, against the controls
    conditions.parquet/.csv    per condition x time point: replicate mean, SD, vs controls
    depth.parquet/.csv         per well x time x depth class x phase
    tracks.parquet/.csv        per track: phase sequence, hours per phase
    durations.parquet/.csv     per condition x phase: hours in phase of complete tracks
    doseresponse.parquet/.csv  one row per drug x read-out: 4PL fit, EC50 and interval, status
    figures/*.png, thumbnails/*.png, provenance.json
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.report import ReportConfig
from pipeline.errors import StoreError
from pipeline.io.plate import Plate
from pipeline.io.tables import read_table
from pipeline.provenance import provenance
from pipeline.report import figures as figs
from pipeline.report import html as page
from pipeline.report.compare import condition_table, well_readouts
from pipeline.report.doseresponse import fit_plate
from pipeline.report.tables import (
    FieldData,
    depth_table,
    duration_summary,
    long_timecourse,
    resolve_times,
    track_table,
    well_timecourse,
)
from pipeline.report.thumbnails import thumbnail_png

LOG = logging.getLogger(__name__)

STAGE = "report"


@dataclass
class ReportResult:
    """What :func:`write_report` wrote (small: paths and the fits)."""

    url: str
    """URL of ``index.html``."""
    folder: str
    wells: int
    timepoints: int
    fits: pd.DataFrame
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0


def report_folder(plate: Plate, config: ReportConfig) -> str:
    """Where the report goes: ``<store>/<output>``, or ``output`` itself when it is a URL or absolute path."""
    from pathlib import PurePath

    if "://" in config.output or PurePath(config.output).is_absolute():
        return config.output.rstrip("/")
    return plate.location.child(config.output)


def load_fields(plate: Plate, config: ReportConfig) -> list[FieldData]:
    """Every field's nucleus and track tables with its stack geometry.

    Raises
    ------
    StoreError
        A field without the nucleus table (run ``spheroid cellcycle`` first).
    """
    out = []
    for fld in plate.select(None):
        try:
            nuclei = read_table(fld, config.table)
        except StoreError:
            raise StoreError(f"{plate.location.url}: field {fld} has no table '{config.table}'; run `spheroid cellcycle` first") from None
        try:
            tracks = read_table(fld, config.tracks_table)
        except StoreError:
            tracks = None
        meta = fld.meta()
        shape = fld.image().shape
        extent = tuple(float((n - 1) * v) for n, v in zip(shape[2:], meta.voxel_size))
        out.append(FieldData(fld.well, str(fld), nuclei, tracks, extent, float(meta.time_step or 1800.0), int(shape[0])))
    return out


def thumbnails(plate: Plate, config: ReportConfig, nuclei: pd.DataFrame, nuclear: str, t: int) -> dict[str, str]:
    """Well -> data URI of its thumbnail (field 0 of the well, middle z slice at ``t``)."""
    out: dict[str, str] = {}
    for fld in plate.select(None):
        if fld.well in out or not fld.has_labels(config.labels):
            continue
        meta = fld.meta()
        c = meta.channels.index(nuclear) if nuclear in meta.channels else 0
        image = fld.image()
        tt = min(t, image.shape[0] - 1)
        z = image.shape[2] // 2
        plane = np.asarray(image[tt, c, z])
        stored = fld.labels(config.labels)
        labels = np.asarray(stored[tt, z] if stored.ndim == 4 else stored[tt, 0, z])  # t, z, y, x (older stores: t, c, z, y, x)
        rows = nuclei[(nuclei["field"] == str(fld)) & (nuclei["t"] == tt)]
        out[fld.well] = page.data_uri(thumbnail_png(plane, labels, rows, config.thumbnail_px))
    return out


def _write(fs, folder: str, name: str, data: bytes) -> str:
    path = f"{folder}/{name}"
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(data)
    return path


def _table_bytes(table: pd.DataFrame, record: dict[str, Any]) -> tuple[bytes, bytes]:
    import io

    table = table.copy()
    table.attrs["spheroid"] = record
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue(), table.to_csv(index=False, float_format="%.6g").encode()


def write_report(
    plate: Plate,
    config: ReportConfig,
    *,
    layout: dict[str, dict[str, Any]] | None = None,
    title: str | None = None,
    nuclear_channel: str = "Hoechst",
    extra: dict[str, Any] | None = None,
    sections: list[tuple[str, str]] | None = None,
) -> ReportResult:
    """Compute and write the report of ``plate``.

    Parameters
    ----------
    plate : Plate
        The store, after ``cellcycle`` (and ``track`` for durations).
    config : ReportConfig
        Output folder, read-out times, depth classes, fits.
    layout : dict, optional
        Well -> ``condition, drug, dose, unit, control, replicate``
        (:func:`pipeline.config.experiment.layout_rows`); without it every well is its own
        condition.
    title : str, optional
        Page title (the plate's name by default).
    nuclear_channel : str
        Channel shown in the thumbnails.
    extra : dict, optional
        Further facts for the provenance record (the experiment, the segmentation model).
    sections : list, optional
        Extra ``(heading, html)`` sections placed before the provenance (the evaluation).

    Returns
    -------
    ReportResult
    """
    start = time.perf_counter()
    fields = load_fields(plate, config)
    n_t = max(f.n_timepoints for f in fields)
    times = resolve_times(config, n_t)
    wells_in_store = sorted({f.well for f in fields})
    if layout is None:
        from pipeline.config.experiment import layout_rows

        layout = layout_rows({}, wells_in_store)
    wells, nuclei = well_timecourse(fields, layout, config.depth)
    long = long_timecourse(wells)
    depth = depth_table(nuclei, wells, config.depth)
    tracks = track_table(fields, wells)
    durations = duration_summary(tracks)
    readouts = well_readouts(wells, times)
    conditions = condition_table(wells)
    fits_table, fits = fit_plate(readouts, config.dose_response)

    record = provenance(STAGE, config, store=plate.location.url, times=times, **(extra or {}), **_models(plate))
    tables = {
        "timecourse": long, "wells": readouts, "conditions": conditions, "depth": depth,
        "tracks": tracks, "durations": durations, "doseresponse": fits_table,
    }
    pngs = _figures(config, wells, conditions, depth, tracks, readouts, fits, times)
    thumbs = thumbnails(plate, config, nuclei, nuclear_channel, times["thumbnail"])
    html = _page(title or plate.name, config, readouts, fits_table, pngs, thumbs, times, record, sections or [], n_t, fields)

    folder = report_folder(plate, config)
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder, **(plate.location.storage_options if "://" in folder else {}))
    scratch = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
    written = []
    for name, table in tables.items():
        parquet, csv = _table_bytes(table, record)
        written.append(_write(fs, scratch, f"{name}.parquet", parquet))
        if config.csv:
            written.append(_write(fs, scratch, f"{name}.csv", csv))
    for name, data in pngs.items():
        written.append(_write(fs, scratch, f"figures/{name}.png", data))
    for well, uri in thumbs.items():
        import base64

        written.append(_write(fs, scratch, f"thumbnails/{well}.png", base64.b64decode(uri.split(",", 1)[1])))
    written.append(_write(fs, scratch, "provenance.json", json.dumps(record, indent=1, default=str).encode()))
    written.append(_write(fs, scratch, "index.html", html.encode("utf-8")))
    if fs.exists(root):
        fs.rm(root, recursive=True)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:
        fs.mv(scratch, root, recursive=True)  # one rename
    else:  # an object store has no folder to rename (s3fs's recursive move of a prefix fails): file by file, index.html last
        for path in sorted(written, key=lambda p: p.endswith("/index.html")):
            fs.copy(path, path.replace(scratch, root, 1))
        fs.rm(scratch, recursive=True)
    files = [p.replace(scratch, root, 1) for p in written]
    seconds = time.perf_counter() - start
    LOG.info("report: %d wells, %d time points, %d fits -> %s (%.1f s)", len(wells_in_store), n_t, len(fits), folder, seconds)
    return ReportResult(url=f"{folder}/index.html", folder=folder, wells=len(wells_in_store), timepoints=n_t, fits=fits_table, files=files, seconds=seconds)


def _models(plate: Plate) -> dict[str, Any]:
    """The segmentation model and the phase model that made the tables (from the store's records)."""
    records = plate.records()
    out: dict[str, Any] = {}
    seg = records.get("segment", {})
    if seg:
        settings = seg.get("settings", {})
        out["segmentation_model"] = {k: settings.get(k) for k in settings if k not in ("input", "tile", "overlap")}
    cc = records.get("cellcycle", {})
    if cc.get("model"):
        out["phase_model"] = cc["model"]
    return out


def _figures(config, wells, conditions, depth, tracks, readouts, fits, times) -> dict[str, bytes]:
    dpi = config.dpi
    out = {
        "growth": figs.png(figs.timecourse(conditions, [("nuclei", "nuclei"), ("growth", "growth (nuclei / first time point)")], "Growth"), dpi),
        "spheroid": figs.png(figs.timecourse(conditions, [("spheroid_radius_um", "spheroid radius (um)"), ("spheroid_volume_um3", "spheroid volume in the stack (um^3)"),
                                                          ("fraction_dead", "dead fraction")], "Spheroid size and dead cells"), dpi),
        "phases": figs.png(figs.phase_panels(wells), dpi),
        "depth": figs.png(figs.depth_panels(depth, times["depth"]), dpi),
        "durations": figs.png(figs.duration_boxes(tracks), dpi),
    }
    if readouts["control"].any():
        out["controls"] = figs.png(figs.against_controls(readouts), dpi)
    for drug in sorted({f.drug for f in fits}):
        out[f"doseresponse_{_slug(drug)}"] = figs.png(figs.dose_response(readouts, fits, drug, confidence=config.dose_response.confidence), dpi)
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_") or "drug"


def _page(title, config, readouts, fits_table, pngs, thumbs, times, record, sections, n_t, fields) -> str:
    step_h = fields[0].time_step_s / 3600.0
    dr = config.dose_response
    fit_rows = fits_table.copy()
    for col in ("ec50", "ec50_low", "ec50_high", "hill", "bottom", "top", "r2"):
        fit_rows.loc[fit_rows["status"] != "ok", col] = np.nan
    summary = (
        f"<p>{len(readouts)} wells, {n_t} time points ({step_h:g} h apart). Read-outs: G1 fraction at time point "
        f"{times['g1']} ({times['g1'] * step_h:g} h), growth from time point {times['growth_from']} to {times['growth_to']}. "
        "Phase fractions are of live nuclei; the dead fraction is of all nuclei.</p>"
        '<p class="legend">' + "".join(f'<span style="background:{c}">{p}</span>' for p, c in figs.PHASE_COLORS.items()) + "</p>"
    )
    well_cols = ["well", "condition", "drug", "dose", "unit", "control", "replicate", "nuclei_first", "nuclei_last", "growth",
                 "g1_fraction", "delta_g1", "growth_vs_control", "dead_fraction", "radius_um"]
    labels = {"nuclei_first": "nuclei (first)", "nuclei_last": "nuclei (last)", "g1_fraction": "G1 fraction", "delta_g1": "G1 vs controls",
              "growth_vs_control": "growth vs controls", "dead_fraction": "dead fraction", "radius_um": "radius (um)"}
    fits_html = page.table_html(fit_rows[["drug", "readout", "unit", "n_wells", "n_doses", "status", "ec50", "ec50_low", "ec50_high", "hill", "bottom", "top", "r2", "message"]],
                                table_id="fits", labels={"ec50_low": f"{100 * dr.confidence:.0f}% CI low", "ec50_high": f"{100 * dr.confidence:.0f}% CI high"})
    fig = lambda name, alt: page.figure_html(page.data_uri(pngs[name]), alt) if name in pngs else ""  # noqa: E731
    dr_figs = "".join(fig(name, name) for name in pngs if name.startswith("doseresponse_"))
    parts = [
        ("Summary", summary),
        ("Wells", "<p>Click a column header to sort. Thumbnails: middle z slice at time point "
                  f"{times['thumbnail']}, nuclei outlined in the colour of their phase.</p>"
                  + page.table_html(readouts[well_cols], table_id="wells", images=thumbs, image_column="well", labels=labels)),
        ("Dose-response", "<p>Four-parameter log-logistic fits (scipy curve_fit); fits that did not converge or whose "
                          "EC50 lies outside the tested doses are flagged, not given a number.</p>" + fits_html + dr_figs if len(fit_rows) else "<p>No drug with doses in the layout.</p>"),
        ("Against the controls", fig("controls", "against the controls") or "<p>No control wells in the layout.</p>"),
        ("Growth", fig("growth", "growth") + fig("spheroid", "spheroid size and dead fraction")),
        ("Phases over time", fig("phases", "phase fractions over time")),
        ("Phases by depth below the rim", f"<p>At time point {times['depth']}; depth = distance of a nucleus' centre to the hull of all "
                                          "nucleus centres, not counting the stack's cut faces.</p>" + fig("depth", "phases by depth")),
        ("Phase durations", "<p>Hours in each phase of the tracks followed from birth to division.</p>" + fig("durations", "phase durations")),
        *sections,
    ]
    return page.page(title, parts, thumb_px=config.thumbnail_px, provenance=record)
