"""The project's user-facing errors.

Anything a user can cause (bad config, missing file, malformed dataset) raises a
``SkillFactoryError``; the entrypoint prints its message once and exits non-zero,
without a traceback from deep inside a library.
"""
from __future__ import annotations

from typing import Iterable


class SkillFactoryError(Exception):
    """An error caused by the user's input, reported as one clear message."""

    exit_code = 2


class ConfigError(SkillFactoryError):
    """One or more semantic config errors, all listed together."""

    def __init__(self, problems: Iterable[object]):
        self.problems = list(problems)
        lines = [f"{len(self.problems)} config problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
