"""Acronym: spell a real English word with the initials of given words (out-of-domain eval).

Usage::

    from skill_factory.tasks import build_task
    task = build_task("acronym")
    q = task.questions("test", 150)[0]
    task.grade("<answer>crane</answer>", q.gold)

A list of words is shown in order. The answer must be a dictionary word of at least
``min_length`` letters whose letters are the first letters of some of the listed words,
taken in the order the words appear (each word at most once). Generation hides a common
word's initials among distractor words, so a solution always exists; any valid word that
satisfies the rule is accepted. The gold is JSON (``{"words":[…],"min_length":5}``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Optional

from skill_factory.tasks.base import Draw, GeneratedTask, SplitParams, register
from skill_factory.tasks.words import common_words, is_word


@dataclass
class AcronymParams(SplitParams):
    """Hidden-word length range and how many distractor words are inserted."""

    min_word_length: int = 4
    max_word_length: int = 6
    extra_words: int = 3
    min_list_word_length: int = 4
    max_list_word_length: int = 9

    def problems(self) -> list[tuple[str, str, str]]:
        out = super().problems()
        if self.min_word_length < 2:
            out.append(("min_word_length", f"must be >= 2, got {self.min_word_length}", "use e.g. 4"))
        if self.max_word_length < self.min_word_length:
            out.append(
                (
                    "max_word_length",
                    f"{self.max_word_length} < min_word_length {self.min_word_length}",
                    "make it >= min_word_length",
                )
            )
        if self.max_word_length > 12:
            out.append(("max_word_length", f"must be <= 12, got {self.max_word_length}", "use e.g. 6"))
        if not 0 <= self.extra_words <= 20:
            out.append(("extra_words", f"must be between 0 and 20, got {self.extra_words}", "use e.g. 3"))
        if self.min_list_word_length < 1 or self.max_list_word_length < self.min_list_word_length:
            out.append(("max_list_word_length", "list-word length range is empty", "use e.g. 4 and 9"))
        return out


DEFAULT_TEMPLATE = """\
Here is a list of words: {words}

Find a valid English word of at least {min_length} letters whose letters are the first letters of some of these words, in the order the words appear in the list. Each listed word can contribute at most one letter, and you may skip words.

Think it through step by step, then write only the word between <answer> and </answer>, for example <answer>stone</answer>."""


def make_gold(words: list, min_length: int) -> str:
    return json.dumps({"words": list(words), "min_length": int(min_length)}, separators=(",", ":"))


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    obj = json.loads(gold)
    initials = "".join(str(w).strip()[:1].lower() for w in obj["words"])
    return initials, int(obj["min_length"])


def _is_subsequence(word: str, initials: str) -> bool:
    it = iter(initials)
    return all(ch in it for ch in word)  # greedy matching is exact for subsequences


@lru_cache(maxsize=16)
def _by_initial(min_length: int, max_length: int) -> dict:
    index: dict = {}
    for w in common_words(min_length, max_length):
        index.setdefault(w[0], []).append(w)
    return index


@register
class Acronym(GeneratedTask):
    name: ClassVar[str] = "acronym"
    aliases: ClassVar[tuple] = ("acronyms",)
    Params: ClassVar[type] = AcronymParams
    default_template: ClassVar[str] = DEFAULT_TEMPLATE
    field_names: ClassVar[tuple] = ("words", "min_length")

    def tag(self) -> str:
        p = self.params
        return f"l{p.min_word_length}-{p.max_word_length}x{p.extra_words}"

    def _draw(self, rng: random.Random, split: str) -> Optional[Draw]:
        p = self.params
        targets = common_words(p.min_word_length, p.max_word_length)
        by_initial = _by_initial(p.min_list_word_length, p.max_list_word_length)
        if not targets or not by_initial:
            return None
        word = rng.choice(targets)
        if any(ch not in by_initial for ch in word):
            return None
        listed = [rng.choice(by_initial[ch]) for ch in word]
        pool = sorted(by_initial)
        for _ in range(p.extra_words):
            distractor = rng.choice(by_initial[rng.choice(pool)])
            listed.insert(rng.randint(0, len(listed)), distractor)
        if len(set(listed)) != len(listed):
            return None  # a repeated list word reads like a mistake in the question
        key = " ".join(listed)
        return Draw(
            key=key,
            partition_key=key,
            fields={"words": ", ".join(listed), "min_length": str(len(word))},
            gold=make_gold(listed, len(word)),
            meta={"words": listed, "min_length": len(word), "example": word},
        )

    def _score(self, answer: str, gold: Any) -> bool:
        initials, min_length = _parse_gold(
            gold if isinstance(gold, str) else make_gold([str(w) for w in gold["words"]], gold["min_length"])
        )
        word = answer.strip().rstrip(".").lower()
        if len(word) < min_length or not word.isascii() or not word.isalpha():
            return False
        return _is_subsequence(word, initials) and is_word(word)
