"""Progress: a tqdm bar on a terminal, a few log lines in a redirected log."""

from __future__ import annotations

import logging

from pipeline.progress import LoggedProgress, progress_bar


def test_redirected_progress_logs_a_line_per_interval_not_per_step(caplog):
    """tqdm redraws on every set_postfix (as the training loop calls it): the log still gets few lines."""
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        bar = progress_bar(total=300, desc="train", unit="step", mininterval=60)  # pytest's stderr is no terminal
        assert isinstance(bar, LoggedProgress)
        for i in range(300):
            bar.update(1)
            bar.set_postfix(loss=f"{i:.4f}")
        bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert len(lines) == 2, lines  # the first step, then the end (no 60 s passed)
    assert lines[-1].startswith("train: 300/300 step") and sum(line.startswith("train: 300/300") for line in lines) == 1


def test_disabled_progress_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        for _ in progress_bar(range(5), desc="x", disable=True):
            pass
    assert not [r for r in caplog.records if r.name == "pipeline.progress"]
