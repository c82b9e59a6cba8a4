"""Progress bars on a terminal, periodic log lines elsewhere.

A tqdm bar redraws itself with carriage returns; written into a file (a SLURM job's
log, ``2> run.log``) every redraw becomes a line. :func:`progress_bar` gives a real bar
when stderr is a terminal, and otherwise the same object logging one INFO line
("preprocess: 12/48 volume [00:10<00:30, 1.20 volume/s]") at most every
:data:`LOG_EVERY` seconds and at the end (shown with ``-v``).
"""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

LOG = logging.getLogger("pipeline.progress")

LOG_EVERY = 30.0
"""Seconds between two progress lines in a log."""


class _Discard:
    """A file that drops what tqdm writes besides the display (the newline at close)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class LoggedProgress(tqdm):
    """A tqdm whose display is a log line, at most every ``mininterval`` seconds."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", LOG_EVERY)
        kwargs.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]")
        kwargs["maxinterval"] = max(kwargs.get("maxinterval", 0) or 0, kwargs["mininterval"])
        kwargs["miniters"] = 1
        self._logged_n: int | None = None
        self._logged_at: float | None = None
        self._closing = False
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):  # noqa: D102 - tqdm's hook
        if msg == "":  # tqdm clearing its line
            return True
        # tqdm also redraws on set_postfix / refresh after every step: the interval is kept here
        now = self._time()
        if self.n == self._logged_n or (not self._closing and self._logged_at is not None and now - self._logged_at < self.mininterval):
            return True
        line = (msg or str(self)).strip()
        if line and self.n:
            LOG.info("%s", line)
            self._logged_n, self._logged_at = self.n, now
        return True

    def close(self):
        if not self.disable and self.n and self.total is not None:
            self._closing = True  # the last count is always logged
            self.display()
        super().close()


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal; :class:`LoggedProgress` when stderr is not one."""
    if disable or sys.stderr is None or sys.stderr.isatty():
        return tqdm(iterable, disable=disable, **kwargs)
    return LoggedProgress(iterable, file=_Discard(), **kwargs)
