"""One progress bar helper for every long loop (sampling, reflection, traces, eval).

Why one helper: every stage shows the same columns (done/total, rate, elapsed, ETA, plus
a free-form field such as tokens/s), and every bar ends with one log line, so a log file
(or a CI run without a terminal, where Rich draws no live bar) still says how long the
loop took and how fast it went.

    with progress("sample", total=len(prompts), unit="prompts") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch), info=f"{tokens / bar.elapsed:.0f} tok/s")
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class Bar:
    """Handle to advance a bar and attach a short status string."""

    def __init__(self, progress: Progress, task_id, unit: str):
        self._progress = progress
        self._task = task_id
        self.unit = unit
        self.done = 0
        self.info = ""
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        if info is not None:
            self.info = info
        self._progress.update(self._task, advance=n, info=self.info)


@contextmanager
def progress(description: str, total: int | None, unit: str = "items") -> Iterator[Bar]:
    """A Rich progress bar that logs a one-line summary when it closes."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, transient=False) as prog:
        bar = Bar(prog, prog.add_task(description, total=total, info=""), unit)
        yield bar
    rate = bar.done / bar.elapsed
    suffix = f", {bar.info}" if bar.info else ""
    log.info("%s: %d %s in %.1f s (%.1f %s/s%s)", description, bar.done, unit,
             bar.elapsed, rate, unit, suffix)


def track(items: Iterable[T], description: str, total: int | None = None,
          unit: str = "items") -> Iterator[T]:
    """Iterate with a progress bar: ``for q in track(questions, "grade"): ...``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, unit) as bar:
        for item in items:
            yield item
            bar.advance(1)
