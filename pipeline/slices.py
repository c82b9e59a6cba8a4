"""Split a plate's fields among the tasks of a job array.

A campaign too large for one job runs as a SLURM job array: each array task takes one
contiguous part of the fields (``--slice I/N``), starts a local Dask cluster inside its
own allocation and runs the store stages on those fields only. No scheduler has to live
for the whole campaign, and a task that fails or is preempted is simply run again (every
stage resumes). ``deploy/slurm/array.sh`` submits such a campaign.

>>> Slice.parse("1/3").take(["B2/0", "B3/0", "C2/0", "C3/0", "C4/0"])
['C2/0', 'C3/0']
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

from pipeline.errors import ConfigError

T = TypeVar("T")

_SLICE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Slice:
    """Part ``index`` (0-based) of ``count`` contiguous parts of equal size (within one)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"--slice {self.index}/{self.count}: expected I/N with 0 <= I < N")

    @classmethod
    def parse(cls, text: str, env: Mapping[str, str] | None = None) -> "Slice":
        """``"I/N"``, or ``"slurm"``: this job-array task's part, from SLURM's environment.

        Raises
        ------
        ConfigError
            If ``text`` is neither, or ``"slurm"`` is used outside a job array.
        """
        if text.strip().lower() == "slurm":
            return cls.from_slurm(os.environ if env is None else env)
        match = _SLICE.match(text)
        if not match:
            raise ConfigError(f"--slice {text!r}: expected I/N (part I of N, counted from 0) or 'slurm'")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_slurm(cls, env: Mapping[str, str]) -> "Slice":
        """The part of the running array task: task id minus the array's first id, of as many
        parts as the array has ids (``sbatch --array=0-7`` or ``1-8``: 8 parts).

        Raises
        ------
        ConfigError
            Outside a job array, or for an array whose ids are not one contiguous range.
        """
        try:
            task, first, last = (int(env[k]) for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX"))
        except (KeyError, ValueError):
            raise ConfigError("--slice slurm: not a SLURM job-array task (SLURM_ARRAY_TASK_ID, _MIN, _MAX unset)") from None
        count = last - first + 1
        if int(env.get("SLURM_ARRAY_TASK_COUNT", count)) != count:
            raise ConfigError(
                f"--slice slurm: array ids {first}-{last} are not one contiguous range "
                f"({env.get('SLURM_ARRAY_TASK_COUNT')} tasks); submit with --array={first}-{last}"
            )
        return cls(task - first, count)

    def bounds(self, n: int) -> tuple[int, int]:
        """``[start, stop)`` of this part among ``n`` items (the first ``n % count`` parts hold one more)."""
        size, extra = divmod(n, self.count)
        start = self.index * size + min(self.index, extra)
        return start, start + size + (1 if self.index < extra else 0)

    def take(self, items: Sequence[T]) -> list[T]:
        """This part of ``items`` (empty when there are fewer items than parts)."""
        start, stop = self.bounds(len(items))
        return list(items[start:stop])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def select_fields(plate, fields: Sequence[str] | None, part: Slice | None) -> list[str] | None:
    """The fields a stage runs on: those named (or all of the plate), cut to ``part``.

    Returns
    -------
    list of str or None
        ``None`` (every field) without a slice; otherwise the part's fields as
        ``"WELL/INDEX"``, possibly none.
    """
    if part is None:
        return list(fields) or None
    return part.take([str(f) for f in plate.select(list(fields) or None)])
