"""Shared fixtures: small synthetic volumes with fixed seeds, the real samples, a Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__import__("os").environ.get("SPHEROID_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real public samples (../shared/data); tests skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dask_client():
    """A real two-worker local Dask cluster (processes), shared by the session."""
    from pipeline.cluster import open_client
    from pipeline.config.cluster import ClusterConfig

    with open_client(ClusterConfig(n_workers=2, threads_per_worker=1, memory_limit="4GB")) as client:
        yield client


@pytest.fixture(scope="session")
def cluster_config():
    """Config of a small local cluster for commands that open their own."""
    from pipeline.config.cluster import ClusterConfig

    return ClusterConfig(n_workers=2, threads_per_worker=1, memory_limit="4GB")
