"""The shared progress helper yields everything and always logs a summary line."""
from __future__ import annotations

import logging

from skill_factory.progress import progress, track


def test_track_yields_all_items_and_logs_rate(caplog):
    with caplog.at_level(logging.INFO, logger="skill_factory.progress"):
        assert list(track(range(7), "grade", unit="answers")) == list(range(7))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("grade: 7 answers in ") and "answers/s" in line


def test_progress_bar_carries_info_field(caplog):
    with caplog.at_level(logging.INFO, logger="skill_factory.progress"):
        with progress("sample", total=10, unit="prompts") as bar:
            bar.advance(4, info="120 tok/s")
            bar.advance(6)
    assert bar.done == 10
    assert caplog.records[-1].getMessage().endswith("prompts/s, 120 tok/s)")
