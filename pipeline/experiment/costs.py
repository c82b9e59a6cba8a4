"""Time and storage estimates for ``spheroid run --dry-run``, from measured per-volume costs.

A stage's cost is kept per megavoxel of one of its volumes (a ``(t, c)`` volume for convert
and preprocess, a time point for the others): worker-seconds (wall seconds x workers) and
stored bytes. After each stage ``spheroid run`` records what it measured in the store's run
record, and later plans of the same store use those figures; a new store uses
:data:`DEFAULTS`, measured by ``spheroid demo`` on a 2-core machine (see docs/REPORT.md).
"""

from __future__ import annotations

from typing import Any

from pipeline.config.cluster import ClusterConfig

DEFAULTS: dict[str, tuple[float, float]] = {
    "convert": (0.10, 1.2),
    "preprocess": (1.7, 0.66),
    "segment": (9.3, 0.19),
    "evaluate": (1.4, 0.0),
    "cellcycle": (1.1, 0.3),
    "track": (0.42, 0.05),
    "report": (0.19, 0.0),
}
"""Stage -> (worker-seconds per megavoxel volume, stored bytes per voxel), measured by the demo
(15 wells x 6 time points of 3 x 21 x 128 x 128 voxels) on a shared 2-core machine under a load
of ~8 (so the times are on the high side); see docs/REPORT.md."""


def workers(cluster: ClusterConfig) -> int:
    """Workers the estimate divides by (the local cluster's, else the SLURM jobs x processes)."""
    from pipeline.cluster import default_workers

    if cluster.kind == "slurm":
        return cluster.slurm.jobs * cluster.slurm.processes
    if cluster.kind == "address":
        return cluster.n_workers or 1
    return cluster.n_workers or default_workers()


def measured(record: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per-stage costs recorded in a store's run record (stages that processed volumes)."""
    out = {}
    for stage, info in record.get("stages", {}).items():
        volumes, mvox, seconds = info.get("volumes", 0), info.get("megavoxels", 0), info.get("worker_seconds")
        if volumes and mvox and seconds is not None:
            out[stage] = (float(seconds) / (volumes * mvox), float(info.get("bytes_per_voxel", DEFAULTS.get(stage, (0, 0))[1])))
    return out


def estimate(stage: str, volumes: int, voxels: float, n_workers: int, known: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """Wall seconds and bytes for ``volumes`` volumes of ``voxels`` voxels each."""
    per_mvox, per_voxel = known.get(stage, DEFAULTS.get(stage, (0.0, 0.0)))
    parallel = 1 if stage in ("track", "report") else max(1, n_workers)
    return volumes * voxels / 1e6 * per_mvox / parallel, volumes * voxels * per_voxel


def source_note(known: dict[str, tuple[float, float]]) -> str:
    """Where the costs come from, for the printed plan."""
    if not known:
        return "the demo's costs on 2 cores"
    return f"this store's measured costs ({', '.join(sorted(known))}) and the demo's for the rest"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return "-" if seconds <= 0 else "<1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(n: float) -> str:
    if n <= 0:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.0f} PB"
