"""Long multiplication: an out-of-domain evaluation task (2-5 digit operands).

Usage::

    from skill_factory.tasks import build_task
    task = build_task("longmult", digits=4)          # 4-digit x 4-digit
    qs = task.questions("test", 250)
    task.grade("... <answer>5,350,050</answer>", qs[0].gold)

The paper evaluates 250 problems per operand size. The gold is the product as a plain
integer string, scored by exact numeric equality after the usual normalisation (thousands
separators, a trailing full stop, ``\\boxed{}``), shared with GSM8K.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from skill_factory.tasks.answer import numbers_equal
from skill_factory.tasks.base import Draw, GeneratedTask, SplitParams, register


@dataclass
class LongMultParams(SplitParams):
    """Operand sizes: ``digits`` for the first operand, ``digits_b`` (0 = same) for the second."""

    digits: int = 2
    digits_b: int = 0

    def problems(self) -> list[tuple[str, str, str]]:
        out = super().problems()
        if not 1 <= self.digits <= 12:
            out.append(("digits", f"must be between 1 and 12, got {self.digits}", "use 2-5 as in the paper"))
        if not 0 <= self.digits_b <= 12:
            out.append(("digits_b", f"must be between 0 and 12, got {self.digits_b}", "use 0 to match digits"))
        return out


DEFAULT_TEMPLATE = """\
Compute {a} * {b}.

Work it out step by step, then write only the final product between <answer> and </answer>, for example <answer>1234</answer>."""


@register
class LongMultiplication(GeneratedTask):
    name: ClassVar[str] = "longmult"
    aliases: ClassVar[tuple] = ("long_multiplication", "multiplication", "long_mult")
    Params: ClassVar[type] = LongMultParams
    default_template: ClassVar[str] = DEFAULT_TEMPLATE
    field_names: ClassVar[tuple] = ("a", "b")

    def tag(self) -> str:
        p = self.params
        return f"{p.digits}x{p.digits_b or p.digits}"

    def _draw(self, rng: random.Random, split: str) -> Optional[Draw]:
        p = self.params
        db = p.digits_b or p.digits
        a = rng.randint(10 ** (p.digits - 1), 10**p.digits - 1)
        b = rng.randint(10 ** (db - 1), 10**db - 1)
        key = f"{min(a, b)}*{max(a, b)}"
        return Draw(
            key=key,
            partition_key=key,
            fields={"a": str(a), "b": str(b)},
            gold=str(a * b),
            meta={"a": a, "b": b, "product": a * b},
        )

    def _score(self, answer: str, gold: Any) -> bool:
        return numbers_equal(answer, str(gold))
