"""Tasks and their verifiers: one ``score`` per task, shared by every stage.

Usage::

    from skill_factory.tasks import build_task, get_task, grade_for_source
    task = build_task("countdown", num_numbers=3)
    q = task.questions("train", 8000, seed=0)[0]
    extracted, correct = task.grade(response_text, q.gold)
    extracted, correct = grade_for_source("countdown", response_text, q.gold)  # reward path

Importing this package registers every task; it imports no torch/transformers/verl (the
word lists, ``datasets`` and ``pyarrow`` load lazily, only when a task needs them).
"""

from __future__ import annotations

from typing import Any, Optional

from skill_factory.tasks import acronym, countdown, csqa, gsm8k, letter_countdown, longmult  # noqa: F401 - importing registers the tasks
from skill_factory.tasks.acronym import Acronym, AcronymParams
from skill_factory.tasks.answer import extract_last_answer, numbers_equal, parse_number
from skill_factory.tasks.base import (
    SPLITS,
    Question,
    Task,
    build_task,
    canonical_split,
    default_task,
    register,
    render_template,
    resolve_name,
    task_class,
    task_for_source,
    task_names,
)
from skill_factory.tasks.config import TaskConfig, check, get_task
from skill_factory.tasks.countdown import Countdown, CountdownParams
from skill_factory.tasks.csqa import CommonsenseQA, CSQAParams
from skill_factory.tasks.gsm8k import GSM8K, GSM8KParams
from skill_factory.tasks.letter_countdown import LetterCountdown, LetterCountdownParams
from skill_factory.tasks.longmult import LongMultiplication, LongMultParams


def grade_for_source(data_source: Any, response: Any, gold: Any) -> tuple[Optional[str], bool]:
    """Grade a response for the task named by a dataset's ``data_source`` column.

    Unknown sources grade as ``(None, False)``: a reward must not crash on a stray row.
    """
    task = task_for_source(data_source)
    if task is None:
        return None, False
    return task.grade(response, gold)


__all__ = [
    "GSM8K",
    "SPLITS",
    "Acronym",
    "AcronymParams",
    "CSQAParams",
    "CommonsenseQA",
    "Countdown",
    "CountdownParams",
    "GSM8KParams",
    "LetterCountdown",
    "LetterCountdownParams",
    "LongMultParams",
    "LongMultiplication",
    "Question",
    "Task",
    "TaskConfig",
    "build_task",
    "canonical_split",
    "check",
    "default_task",
    "extract_last_answer",
    "get_task",
    "grade_for_source",
    "numbers_equal",
    "parse_number",
    "register",
    "render_template",
    "resolve_name",
    "task_class",
    "task_for_source",
    "task_names",
]
