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


class LoggedProgress(tqdm):
    """A tqdm whose display is a log line, at most every ``mininterval`` seconds."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", LOG_EVERY)
        kwargs.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]")
        kwargs["maxinterval"] = max(kwargs.get("maxinterval", 0) or 0, kwargs["mininterval"])
        kwargs["miniters"] = 1
        self._logged = None
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):  # noqa: D102 - tqdm's hook
        if msg == "":  # tqdm clearing its line
            return True
        line = (msg or str(self)).strip()
        if line and line != self._logged and self.n:
            LOG.info("%s", line)
            self._logged = line
        return True

    def close(self):
        if not self.disable and self.n and self.total is not None and not self._closed_logged():
            self.display()
        super().close()

    def _closed_logged(self) -> bool:
        return bool(self._logged) and self._logged.startswith(f"{self.desc}: {self.n}/") if self.desc else False


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal; :class:`LoggedProgress` when stderr is not one."""
    if disable or sys.stderr is None or sys.stderr.isatty():
        return tqdm(iterable, disable=disable, **kwargs)
    return LoggedProgress(iterable, file=sys.stderr, **kwargs)
