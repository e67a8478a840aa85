"""Config schema of the ``task`` group: which task to train on, and its parameters.

Usage (Hydra)::

    skillfactory task=countdown task.train_size=8000 task.countdown.num_numbers=4

Usage (library)::

    from skill_factory.tasks.config import TaskConfig, get_task
    task = get_task(TaskConfig())          # Countdown, 3 numbers, paper defaults

Every task has its own parameter block (``task.countdown``, ``task.longmult``, …), typed by
the same params dataclass the task itself takes, so a misspelt key fails at compose time and
``name`` only selects which block is used. Evaluation suites build their out-of-domain tasks
from the same params classes with ``build_task(name, **params)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.tasks.acronym import AcronymParams
from skill_factory.tasks.base import Task, make_params, resolve_name, task_class, task_names, template_fields
from skill_factory.tasks.countdown import CountdownParams
from skill_factory.tasks.csqa import CSQAParams
from skill_factory.tasks.gsm8k import GSM8KParams
from skill_factory.tasks.letter_countdown import LetterCountdownParams
from skill_factory.tasks.longmult import LongMultParams


@dataclass
class TaskConfig:
    # registry name of the training task (countdown, longmult, letter_countdown, acronym, gsm8k, csqa)
    name: str = "countdown"
    # generation seed; the val/test partition is fixed separately by <block>.partition_seed
    seed: int = 0
    # questions per split (a split of size N is the prefix of any larger one)
    train_size: int = 8000
    val_size: int = 200
    test_size: int = 250
    # user-prompt template with named placeholders; null = the task's default ("original")
    template: Optional[str] = None
    countdown: CountdownParams = field(default_factory=CountdownParams)
    longmult: LongMultParams = field(default_factory=LongMultParams)
    letter_countdown: LetterCountdownParams = field(default_factory=LetterCountdownParams)
    acronym: AcronymParams = field(default_factory=AcronymParams)
    gsm8k: GSM8KParams = field(default_factory=GSM8KParams)
    csqa: CSQAParams = field(default_factory=CSQAParams)


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    try:
        return getattr(cfg, name)
    except Exception:  # noqa: BLE001 - DictConfig raises its own errors for missing keys
        return default


def check(cfg: Any, problems: Any, key: str = "task") -> None:
    """Append every semantic problem of a task config to ``problems`` (never raises).

    Works on a ``TaskConfig`` or a composed OmegaConf node of the same shape.
    """
    name = _get(cfg, "name")
    resolved = resolve_name(name) if isinstance(name, str) else None
    if resolved is None:
        problems.add(f"{key}.name", f"unknown task {name!r}", f"use one of: {', '.join(task_names())}")
    for size_key in ("train_size", "val_size", "test_size"):
        value = _get(cfg, size_key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.add(f"{key}.{size_key}", f"must be a non-negative integer, got {value!r}", "use e.g. 250")
    if resolved is not None and _get(cfg, "train_size", 0) == 0:
        problems.add(f"{key}.train_size", "the training task needs at least one question", "use e.g. 8000")
    seed = _get(cfg, "seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.add(f"{key}.seed", f"must be an integer, got {seed!r}", "use e.g. 0")

    template = _get(cfg, "template")
    if template is not None:
        try:
            names = template_fields(str(template))
        except SkillFactoryError as exc:
            problems.add(f"{key}.template", str(exc), "fix the placeholders")
        else:
            if resolved is not None:
                allowed = task_class(resolved).field_names
                unknown = [n for n in names if n not in allowed]
                if unknown:
                    problems.add(
                        f"{key}.template",
                        f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} for task {resolved}",
                        f"use only {', '.join('{' + a + '}' for a in allowed)}",
                    )

    for block in task_names():
        node = _get(cfg, block)
        if node is None:
            continue
        try:
            params = make_params(task_class(block), node)
        except (SkillFactoryError, TypeError) as exc:
            problems.add(f"{key}.{block}", str(exc), "remove or rename the unknown keys")
            continue
        for sub, what, fix in params.problems():
            problems.add(f"{key}.{block}.{sub}", what, fix)


def get_task(cfg: Any) -> Task:
    """The configured training task, built from its parameter block and template."""
    name = _get(cfg, "name")
    resolved = resolve_name(name) if isinstance(name, str) else None
    if resolved is None:
        raise SkillFactoryError(f"task.name: unknown task {name!r}; use one of {', '.join(task_names())}")
    cls = task_class(resolved)
    params = make_params(cls, _get(cfg, resolved))
    return cls(params, template=_get(cfg, "template"))
