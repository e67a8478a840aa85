"""CommonsenseQA: five-way multiple choice (out-of-domain eval, loaded, not generated).

Usage::

    from skill_factory.tasks import build_task
    task = build_task("csqa", path="data/csqa_validation.jsonl")  # or the hub default
    qs = task.questions("test", 100)
    task.grade("... <answer>B</answer>", qs[0].gold)

Records follow the hub dataset's schema: ``question``, ``choices`` = ``{"label": [...],
"text": [...]}`` and ``answerKey``. ``choices`` may also be a list of strings (labelled
A, B, …) or a ``{label: text}`` mapping. The public test split has no answers, so the hub
default is the validation split, as is usual for this benchmark.

Scoring reads a choice letter: ``B``, ``(B)``, ``B.``, ``B) bank``, ``B: bank``; a lone
lower-case letter counts too. An answer that repeats one choice's text exactly (``bank``)
counts as that choice. The gold is JSON ``{"label":"B","choices":{"A":…}}`` (a bare
letter also works as gold).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.tasks.base import Question, Task, canonical_split, register
from skill_factory.tasks.gsm8k import LoadedParams, ordered, stable_id
from skill_factory.tasks.loaders import load_records, require_columns


@dataclass
class CSQAParams(LoadedParams):
    hub_id: Optional[str] = "tau/commonsense_qa"
    hub_config: Optional[str] = None
    hub_split: str = "validation"
    choices_field: str = "choices"
    answer_field: str = "answerKey"


DEFAULT_TEMPLATE = """\
{question}

{choices}

Think it through step by step, then write only the letter of the correct choice between <answer> and </answer>, for example <answer>A</answer>."""

_LETTERED = re.compile(r"\(?([A-Z])\)?(?:[.:)]\s*(.*))?", re.ASCII | re.DOTALL)
_LONE = re.compile(r"\(?([a-zA-Z])\)?\.?", re.ASCII)


def _norm_text(s: str) -> str:
    return " ".join(str(s).strip().rstrip(".").lower().split())


def parse_choices(value: Any) -> dict:
    """``{label: text}`` from any of the accepted ``choices`` layouts."""
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict) and "label" in value and "text" in value:
        labels, texts = list(value["label"]), list(value["text"])
        if len(labels) != len(texts):
            raise ValueError("choices.label and choices.text differ in length")
        return {str(k).strip().upper(): str(t) for k, t in zip(labels, texts)}
    if isinstance(value, dict):
        return {str(k).strip().upper(): str(t) for k, t in value.items()}
    items = list(value)
    if len(items) > 26:
        raise ValueError("more than 26 choices")
    return {chr(ord("A") + i): str(t) for i, t in enumerate(items)}


def make_gold(label: str, choices: dict) -> str:
    return json.dumps({"label": label, "choices": choices}, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    text = gold.strip()
    if text.startswith("{"):
        obj = json.loads(text)
        choices = parse_choices(obj.get("choices") or {})
        return str(obj["label"]).strip().upper(), tuple(choices.items())
    return text.upper(), ()


def chosen_label(answer: str, labels: tuple) -> Optional[str]:
    """The choice label an answer names, or None."""
    text = answer.strip()
    valid = {label for label, _ in labels} or None
    m = _LONE.fullmatch(text)
    if m:
        letter = m.group(1).upper()
        return letter if valid is None or letter in valid else None
    m = _LETTERED.fullmatch(text)
    if m:
        letter = m.group(1)
        rest = m.group(2)
        if valid is not None and letter not in valid:
            return None
        if rest and labels:
            # "B) bank" must not name another choice's text
            want = dict(labels).get(letter)
            if want is not None and _norm_text(rest) not in ("", _norm_text(want)):
                return None
        return letter
    norm = _norm_text(text)
    hits = [label for label, choice in labels if _norm_text(choice) == norm]
    return hits[0] if len(hits) == 1 else None


@register
class CommonsenseQA(Task):
    name: ClassVar[str] = "csqa"
    aliases: ClassVar[tuple] = ("commonsense_qa", "commonsenseqa", "tau/commonsense_qa")
    Params: ClassVar[type] = CSQAParams
    default_template: ClassVar[str] = DEFAULT_TEMPLATE
    field_names: ClassVar[tuple] = ("question", "choices")

    def questions(self, split: str, size: int, seed: int = 0) -> list[Question]:
        """The first ``size`` records (all of them when ``size`` is 0)."""
        split = canonical_split(split)
        p = self.params
        what = f"task.{self.name}"
        rows = load_records(p.path, p.hub_id, hub_config=p.hub_config, hub_split=p.hub_split, what=what)
        require_columns(
            rows,
            [p.question_field, p.choices_field, p.answer_field],
            what,
            f"{what}.question_field/choices_field/answer_field",
        )
        out = []
        for index, row in enumerate(ordered(rows, p.shuffle, seed)[: size if size else None]):
            try:
                choices = parse_choices(row[p.choices_field])
            except (ValueError, TypeError) as exc:
                raise SkillFactoryError(f"{what}: record {index} has unreadable {p.choices_field!r} ({exc})") from None
            label = str(row[p.answer_field]).strip().upper()
            if label not in choices:
                raise SkillFactoryError(
                    f"{what}: record {index} answer {label!r} is not one of the choice labels "
                    f"{', '.join(choices)}; check {what}.answer_field"
                )
            question = str(row[p.question_field])
            out.append(
                Question(
                    id=str(row.get("id") or stable_id(self.name, question)),
                    task=self.name,
                    split=split,
                    index=index,
                    fields={
                        "question": question,
                        "choices": "\n".join(f"{k}. {v}" for k, v in choices.items()),
                    },
                    gold=make_gold(label, choices),
                    meta={"label": label},
                )
            )
        return out

    def _score(self, answer: str, gold: Any) -> bool:
        if isinstance(gold, str):
            label, labels = _parse_gold(gold)
        else:
            label, labels = _parse_gold(make_gold(str(gold["label"]), parse_choices(gold.get("choices") or {})))
        return chosen_label(answer, labels) == label
