"""Config schema of the ``task`` group (owned by the tasks package)."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class TaskConfig:
    # registry name of the training task, e.g. "countdown"
    name: str = MISSING


def check(cfg: TaskConfig, problems, key: str = "task") -> None:
    """Append semantic problems of a task config to ``problems`` (never raises)."""
