"""Collect every semantic config error before any work starts.

Why: a researcher who launches a sweep wants to hear about *all* mistakes in one go,
not fix them one traceback at a time. Every check appends to a ``Problems`` list with
the dotted key, what is wrong and how to fix it; ``raise_if_any`` raises a single
``ConfigError`` listing them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from skill_factory.errors import ConfigError


@dataclass
class Problem:
    key: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.what} (fix: {self.fix})"


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)

    def add(self, key: str, what: str, fix: str) -> None:
        self.items.append(Problem(key, what, fix))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)
