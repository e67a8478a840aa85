"""GSM8K: grade-school maths word problems (out-of-domain eval, loaded, not generated).

Usage::

    from skill_factory.tasks import build_task
    task = build_task("gsm8k", path="data/gsm8k_test.jsonl")   # or hub_id="openai/gsm8k"
    qs = task.questions("test", 100)
    task.grade("... <answer>$1,080</answer>", qs[0].gold)

Records follow the hub dataset's schema (``question``, ``answer`` whose last line is
``#### <number>``); column names are configurable. The gold is the canonical final number
(``"1080"``); scoring is exact numeric equality after normalisation (``answer.parse_number``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.tasks.answer import format_number, numbers_equal, parse_number
from skill_factory.tasks.base import Question, Task, canonical_split, register
from skill_factory.tasks.loaders import load_records, require_columns


@dataclass
class LoadedParams:
    """Where a file-backed task's records come from (a local path wins over a hub id)."""

    path: Optional[str] = None
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    hub_split: str = "test"
    question_field: str = "question"
    answer_field: str = "answer"
    shuffle: bool = False

    def problems(self) -> list[tuple[str, str, str]]:
        out = []
        if not self.question_field:
            out.append(("question_field", "must name a column", "e.g. question"))
        if not self.answer_field:
            out.append(("answer_field", "must name a column", "e.g. answer"))
        return out


@dataclass
class GSM8KParams(LoadedParams):
    hub_id: Optional[str] = "openai/gsm8k"
    hub_config: Optional[str] = "main"


DEFAULT_TEMPLATE = """\
{question}

Solve the problem step by step, then write only the final number between <answer> and </answer>, for example <answer>42</answer>."""


def gold_from_solution(solution: str) -> Optional[str]:
    """Canonical final number of a GSM8K solution (text after ``####``, else the whole text)."""
    text = str(solution)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    value = parse_number(text.strip())
    return None if value is None else format_number(value)


def stable_id(task: str, text: str) -> str:
    return f"{task}-{hashlib.blake2b(text.encode('utf-8'), digest_size=6).hexdigest()}"


def ordered(rows: list, shuffle: bool, seed: int) -> list:
    """File order, or a seeded permutation fixed for the whole file (so prefixes are stable)."""
    if not shuffle:
        return list(rows)
    out = list(rows)
    random.Random(f"loaded-order-{seed}").shuffle(out)
    return out


@register
class GSM8K(Task):
    name: ClassVar[str] = "gsm8k"
    aliases: ClassVar[tuple] = ("gsm_8k", "openai/gsm8k", "gsm")
    Params: ClassVar[type] = GSM8KParams
    default_template: ClassVar[str] = DEFAULT_TEMPLATE
    field_names: ClassVar[tuple] = ("question",)

    def questions(self, split: str, size: int, seed: int = 0) -> list[Question]:
        """The first ``size`` records (all of them when ``size`` is 0); the file is the split."""
        split = canonical_split(split)
        p = self.params
        what = f"task.{self.name}"
        rows = load_records(p.path, p.hub_id, hub_config=p.hub_config, hub_split=p.hub_split, what=what)
        require_columns(rows, [p.question_field, p.answer_field], what, f"{what}.question_field/answer_field")
        out = []
        for index, row in enumerate(ordered(rows, p.shuffle, seed)[: size if size else None]):
            question = str(row[p.question_field])
            gold = gold_from_solution(row[p.answer_field])
            if gold is None:
                raise SkillFactoryError(
                    f"{what}: record {index} has no numeric final answer in {p.answer_field!r}; "
                    "GSM8K answers end with '#### <number>'"
                )
            out.append(
                Question(
                    id=str(row.get("id") or stable_id(self.name, question)),
                    task=self.name,
                    split=split,
                    index=index,
                    fields={"question": question},
                    gold=gold,
                    meta={"solution": str(row[p.answer_field])},
                )
            )
        return out

    def _score(self, answer: str, gold: Any) -> bool:
        return numbers_equal(answer, str(gold))
