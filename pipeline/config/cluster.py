"""Where Dask runs the work: a local cluster, an existing scheduler, or SLURM."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import StrictModel


class SlurmConfig(StrictModel):
    """SLURM workers started through dask-jobqueue (the ``[slurm]`` extra)."""

    queue: str | None = None
    """Partition to submit worker jobs to (``#SBATCH -p``); the site default when unset."""
    account: str | None = None
    """Account to charge (``#SBATCH -A``)."""
    jobs: int = Field(2, ge=1)
    """Number of worker jobs to start (or the maximum when ``adapt`` is on)."""
    cores: int = Field(1, ge=1)
    """Cores per worker job."""
    processes: int = Field(1, ge=1)
    """Dask worker processes per job (cores are split between them)."""
    memory: str = "4GB"
    """Memory per worker job, as SLURM and Dask understand it (e.g. ``"16GB"``)."""
    walltime: str = "01:00:00"
    """Wall-clock limit per worker job (``HH:MM:SS``)."""
    interface: str | None = None
    """Network interface the workers listen on (e.g. ``"ib0"``; ``"lo"`` on a one-node test cluster)."""
    local_directory: str | None = None
    """Scratch folder on the compute nodes for spilling."""
    log_directory: str | None = None
    """Folder for the worker jobs' output files (``#SBATCH --output``); SLURM's default (the
    submitting folder, one ``slurm-<id>.out`` per job) when unset."""
    job_extra_directives: list[str] = Field(default_factory=list)
    """Extra ``#SBATCH`` lines, e.g. ``["--gres=gpu:1"]``."""
    job_script_prologue: list[str] = Field(default_factory=list)
    """Shell lines run before the worker starts (``module load``, ``source venv/bin/activate``)."""
    python: str | None = None
    """Python executable on the compute nodes; the current one when unset."""
    adapt: bool = False
    """Scale between 1 and ``jobs`` worker jobs with the load, replacing lost workers."""


class ClusterConfig(StrictModel):
    """The Dask cluster a stage runs on; opened by :func:`pipeline.cluster.open_client`."""

    kind: Literal["local", "address", "slurm"] = "local"
    """``local``: a LocalCluster on this machine; ``address``: connect to a running scheduler;
    ``slurm``: start workers as SLURM jobs."""
    n_workers: int | None = Field(None, ge=1)
    """Local workers; all cores (one single-threaded worker each) when unset."""
    threads_per_worker: int = Field(1, ge=1)
    """Threads per local worker."""
    processes: bool = True
    """Local workers as processes (true) or threads in this process (false). A
    ``memory://`` store forces threads, since another process cannot see it."""
    memory_limit: str = "auto"
    """Memory limit per local worker (``"auto"`` splits the machine's memory)."""
    address: str | None = None
    """Scheduler address for ``kind: address``, e.g. ``tcp://10.0.0.5:8786``."""
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    """Options for ``kind: slurm``."""
    dashboard: bool = False
    """Serve the Dask dashboard (local and SLURM clusters)."""

    @model_validator(mode="after")
    def _address_given(self) -> "ClusterConfig":
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs 'address: tcp://host:port'")
        return self
