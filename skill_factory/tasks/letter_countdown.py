"""Letter countdown: make a real English word from a bag of letters (out-of-domain eval).

Usage::

    from skill_factory.tasks import build_task
    task = build_task("letter_countdown")
    q = task.questions("test", 200)[0]
    task.grade("<answer>garden</answer>", q.gold)

Generation hides a common word among a few extra letters and shuffles them; the answer
must be a dictionary word with at least as many letters as the hidden word, using each
letter no more often than it is given. The hidden word guarantees a solution, but any
valid word of that length or longer is accepted, which is why the scorer checks word
validity and letter counts instead of comparing to one gold string. The gold is JSON
(``{"letters":"adegnr…","min_length":6}``) so the scorer needs nothing else.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Optional

from skill_factory.tasks.base import Draw, GeneratedTask, SplitParams, register
from skill_factory.tasks.words import common_words, is_word


@dataclass
class LetterCountdownParams(SplitParams):
    """Hidden-word length range and how many extra letters are mixed in."""

    min_word_length: int = 5
    max_word_length: int = 7
    extra_letters: int = 3

    def problems(self) -> list[tuple[str, str, str]]:
        out = super().problems()
        if self.min_word_length < 2:
            out.append(("min_word_length", f"must be >= 2, got {self.min_word_length}", "use e.g. 5"))
        if self.max_word_length < self.min_word_length:
            out.append(
                (
                    "max_word_length",
                    f"{self.max_word_length} < min_word_length {self.min_word_length}",
                    "make it >= min_word_length",
                )
            )
        if self.max_word_length > 15:
            out.append(("max_word_length", f"must be <= 15, got {self.max_word_length}", "use e.g. 7"))
        if not 0 <= self.extra_letters <= 10:
            out.append(("extra_letters", f"must be between 0 and 10, got {self.extra_letters}", "use e.g. 3"))
        return out


DEFAULT_TEMPLATE = """\
Here are some letters: {letters}

Find a valid English word of at least {min_length} letters that can be spelled with them. Each letter may be used at most as many times as it appears in the list; you do not need to use all of them.

Think it through step by step, then write only the word between <answer> and </answer>, for example <answer>stone</answer>."""


def make_gold(letters: str, min_length: int) -> str:
    return json.dumps({"letters": letters, "min_length": int(min_length)}, separators=(",", ":"))


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    obj = json.loads(gold)
    letters = str(obj["letters"]).lower()
    return Counter(c for c in letters if c.isalpha()), int(obj["min_length"])


@register
class LetterCountdown(GeneratedTask):
    name: ClassVar[str] = "letter_countdown"
    aliases: ClassVar[tuple] = ("letters", "letter_game", "lettercountdown")
    Params: ClassVar[type] = LetterCountdownParams
    default_template: ClassVar[str] = DEFAULT_TEMPLATE
    field_names: ClassVar[tuple] = ("letters", "min_length")

    def tag(self) -> str:
        p = self.params
        return f"l{p.min_word_length}-{p.max_word_length}x{p.extra_letters}"

    def _draw(self, rng: random.Random, split: str) -> Optional[Draw]:
        p = self.params
        vocab = common_words(p.min_word_length, p.max_word_length)
        if not vocab:
            return None
        word = rng.choice(vocab)
        # extra letters are taken from other everyday words, so their frequencies look English
        extra: list = []
        while len(extra) < p.extra_letters:
            donor = rng.choice(vocab)
            extra += rng.sample(donor, min(p.extra_letters - len(extra), len(donor)))
        letters = list(word) + extra
        rng.shuffle(letters)
        key = "".join(sorted(letters))
        shown = "".join(letters)
        return Draw(
            key=key,
            partition_key=key,
            fields={"letters": ", ".join(letters), "min_length": str(len(word))},
            gold=make_gold(shown, len(word)),
            meta={"letters": shown, "min_length": len(word), "example": word},
        )

    def _score(self, answer: str, gold: Any) -> bool:
        available, min_length = _parse_gold(
            gold if isinstance(gold, str) else make_gold(str(gold["letters"]), gold["min_length"])
        )
        word = answer.strip().rstrip(".").lower()
        if len(word) < min_length or not word.isascii() or not word.isalpha():
            return False
        used = Counter(word)
        if any(used[c] > available[c] for c in used):
            return False
        return is_word(word)
