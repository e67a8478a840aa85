"""Countdown: reach a target with + - * / using each given number exactly once.

Usage::

    from skill_factory.tasks import build_task
    task = build_task("countdown", num_numbers=4)
    q = task.questions("test", 250, seed=0)[0]
    task.grade("<answer>(34 - 26) * 37 + 78</answer>", q.gold)

The paper trains on 3-number problems and evaluates on 2-6 numbers. Two parts live here:

* **Generator.** Each problem is built *constructively* from a random solution: draw the
  numbers, then repeatedly combine two items of the pool with a random operation whose
  result stays a positive integer, until one value is left; that value is the target. So
  every problem is solvable by construction and 6-number problems cost the same as
  3-number ones (no brute-force search). Targets are split by a fixed hash partition so
  test targets never appear in training.

* **Verifier.** Accepts the two answer forms the prompt allows: one expression (optionally
  ``= target``), or ``Step k: a op b = c`` lines over the given numbers and earlier results.
  Parsing uses ``ast`` on a character-whitelisted, length-bounded string and walks only
  integer literals and binary ``+ - * /``; nothing is ever evaluated by Python. Arithmetic
  is exact (``Fraction``); division by zero, ``**``, ``//``, ``%``, decimals, unary signs,
  names and calls are wrong answers, not exceptions. Literal length, literal count,
  nesting depth and value size are bounded, so no input can hang or exhaust memory.
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, ClassVar, Optional

from skill_factory.tasks.base import Draw, GeneratedTask, SplitParams, register

Number = int | Fraction

# --- bounds of the verifier (see module docstring) -------------------------------------------
MAX_EXPRESSION_CHARS = 1_000
MAX_LITERAL_DIGITS = 18
MAX_VALUE_BITS = 1_024
MAX_DEPTH = 64
MAX_NUMBERS = 12

# Look-alike operators and spaces a model commonly emits are mapped to ASCII; everything
# else outside the whitelist (letters, unicode digits, '.', '%', '^', '=' twice, …) fails.
_NORMALISE = str.maketrans({"×": "*", "÷": "/", "−": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\r": "\n"})
_EXPR_CHARS = re.compile(r"[0-9+\-*/() \t]*", re.ASCII)
_INT_TOKEN = re.compile(r"[0-9]+", re.ASCII)
_LONG_LITERAL = re.compile(rf"[0-9]{{{MAX_LITERAL_DIGITS + 1}}}", re.ASCII)
_INT_LITERAL = re.compile(rf"-?[0-9]{{1,{MAX_LITERAL_DIGITS}}}", re.ASCII)
_STEP_ANYWHERE = re.compile(r"^[ \t]*step[ \t]*[0-9]", re.ASCII | re.IGNORECASE | re.MULTILINE)
_STEP_LINE = re.compile(r"\s*step\s*[0-9]{1,3}\s*:(.*)", re.ASCII | re.IGNORECASE)

_BinOp, _Constant, _UnaryOp, _USub = ast.BinOp, ast.Constant, ast.UnaryOp, ast.USub
_Add, _Sub, _Mult, _Div = ast.Add, ast.Sub, ast.Mult, ast.Div


class _Reject(Exception):
    """Internal: the answer is not a valid solution."""


def _bounded(v: Number) -> Number:
    """Reject values beyond MAX_VALUE_BITS.

    With at most MAX_NUMBERS literals of at most MAX_LITERAL_DIGITS digits each, no
    expression over + - * / can exceed the bound, so one check on the final value is a
    safety net rather than the mechanism that keeps values small.
    """
    if type(v) is int:
        if v.bit_length() > MAX_VALUE_BITS:
            raise _Reject
    elif v.numerator.bit_length() > MAX_VALUE_BITS or v.denominator.bit_length() > MAX_VALUE_BITS:
        raise _Reject
    return v


def _walk(node: ast.AST, literals: list, depth: int, allow_negative: bool) -> Number:
    """Exact value of a parsed expression, allowing only literals and binary + - * /."""
    if depth > MAX_DEPTH:
        raise _Reject
    kind = type(node)
    if kind is _BinOp:
        op = type(node.op)
        a = _walk(node.left, literals, depth + 1, allow_negative)
        b = _walk(node.right, literals, depth + 1, allow_negative)
        if op is _Add:
            return a + b
        if op is _Sub:
            return a - b
        if op is _Mult:
            return a * b
        if op is _Div:
            if b == 0:
                raise _Reject  # division by zero is a wrong answer
            if type(a) is int and type(b) is int and a % b == 0:
                return a // b  # exact, stays an int
            return Fraction(a) / b
        raise _Reject  # **, //, %, @, <<, &, ...
    if kind is _Constant:
        value = node.value
        if type(value) is not int:  # bool, float, complex, str, bytes, None, ...
            raise _Reject
        literals.append(value)
        return value
    if (
        allow_negative
        and kind is _UnaryOp
        and type(node.op) is _USub
        and type(node.operand) is _Constant
        and type(node.operand.value) is int
    ):
        # only in Step form, to refer to an earlier negative result such as "-2"
        literals.append(-node.operand.value)
        return -node.operand.value
    raise _Reject


def _evaluate(expr: str, max_literals: int, allow_negative: bool = False, require_op: bool = False):
    """Value and literals of a whitelisted arithmetic expression (raises _Reject)."""
    expr = expr.strip()
    if not expr or len(expr) > MAX_EXPRESSION_CHARS or not _EXPR_CHARS.fullmatch(expr):
        raise _Reject
    if len(_INT_TOKEN.findall(expr)) > max_literals or _LONG_LITERAL.search(expr):
        raise _Reject
    tree = ast.parse(expr, mode="eval")  # SyntaxError for '1 +', '05', unbalanced parens
    if require_op and type(tree.body) is not ast.BinOp:
        raise _Reject
    literals: list = []
    value = _bounded(_walk(tree.body, literals, 0, allow_negative))
    return value, literals


def _verify_expression(text: str, numbers: tuple, target: int) -> bool:
    """The single-expression form, optionally followed by ``= target``.

    Ordered so that cheap checks run first: the whitelist and the multiset of numbers are
    checked on the string (in a whitelisted expression every run of digits is exactly one
    integer literal), and only then is the string parsed. The literals are checked again
    on the parsed tree.
    """
    expr = text.replace("\n", " ")
    eq = expr.find("=")
    if eq >= 0:
        rhs = expr[eq + 1 :].strip()  # a second '=' makes this fail the literal check
        if not _INT_LITERAL.fullmatch(rhs) or int(rhs) != target:
            return False
        expr = expr[:eq]
    expr = expr.strip()
    if not expr or len(expr) > MAX_EXPRESSION_CHARS or not _EXPR_CHARS.fullmatch(expr):
        return False
    tokens = _INT_TOKEN.findall(expr)
    if len(tokens) != len(numbers) or _LONG_LITERAL.search(expr):
        return False
    if tuple(sorted(map(int, tokens))) != numbers:
        return False
    tree = ast.parse(expr, mode="eval")  # SyntaxError for '1 +', '05', unbalanced parens
    literals: list = []
    value = _bounded(_walk(tree.body, literals, 0, False))
    return value == target and tuple(sorted(literals)) == numbers


def _verify_steps(lines: list, numbers: tuple, target: int) -> bool:
    # each step consumes at least two pool items and adds one, so a valid answer has at
    # most len(numbers) - 1 steps; longer answers are rejected before any parsing
    if len(lines) > len(numbers) - 1:
        return False
    pool = Counter(numbers)
    last: Optional[int] = None
    for line in lines:
        m = _STEP_LINE.fullmatch(line)
        if m is None:
            return False
        body = m.group(1)
        if body.count("=") != 1:
            return False
        lhs, rhs = body.split("=")
        rhs = rhs.strip()
        if not _INT_LITERAL.fullmatch(rhs):
            return False
        claimed = int(rhs)
        value, literals = _evaluate(lhs, max_literals=sum(pool.values()), allow_negative=True, require_op=True)
        if value != claimed:
            return False
        # operands are taken from the pool of unused given numbers and earlier results;
        # values are interchangeable, so consuming by value is exact
        for v in literals:
            if pool[v] <= 0:
                return False
            pool[v] -= 1
        pool[claimed] += 1
        last = claimed
    remaining = +pool
    return last == target and remaining == Counter({target: 1})


def verify(answer: str, numbers: Sequence[int], target: int) -> bool:
    """True iff ``answer`` (an extracted answer) solves the Countdown problem. Never raises."""
    try:
        nums = tuple(sorted(int(n) for n in numbers))
        return _verify_sorted(answer, nums, int(target))
    except (TypeError, ValueError, OverflowError):
        return False


def _verify_sorted(answer: str, nums: tuple, target: int) -> bool:
    try:
        if not isinstance(answer, str) or not 0 < len(nums) <= MAX_NUMBERS:
            return False
        text = (answer if answer.isascii() else answer.translate(_NORMALISE)).strip()
        if not text or len(text) > MAX_EXPRESSION_CHARS * 2:
            return False
        if _STEP_ANYWHERE.search(text):
            lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
            return _verify_steps(lines, nums, target)
        return _verify_expression(text, nums, target)
    except (_Reject, SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError, MemoryError):
        return False


# --- gold ---------------------------------------------------------------------------------


def make_gold(numbers: Sequence[int], target: int) -> str:
    """Compact JSON gold string, e.g. ``{"numbers":[34,37,26],"target":374}``."""
    return json.dumps({"numbers": [int(n) for n in numbers], "target": int(target)}, separators=(",", ":"))


def _as_int(x: Any) -> int:
    if isinstance(x, bool):
        raise TypeError("bool is not a number")
    if isinstance(x, str):
        x = x.strip()
        if not _INT_LITERAL.fullmatch(x):
            raise ValueError(f"not an integer: {x!r}")
        return int(x)
    i = int(x)
    if i != x:
        raise ValueError(f"not an integer: {x!r}")
    return i


def _gold_from_mapping(obj: Mapping) -> tuple:
    numbers = tuple(sorted(_as_int(n) for n in obj["numbers"]))
    return numbers, _as_int(obj["target"])


@lru_cache(maxsize=8192)
def _gold_from_str(gold: str) -> tuple:
    return _gold_from_mapping(json.loads(gold))


def parse_gold(gold: Any) -> tuple:
    """``(sorted numbers, target)`` from our JSON gold or a mapping with the same keys.

    Mappings are accepted because TinyZero-style parquet files store the ground truth as
    ``{"target": …, "numbers": array([...])}``; supporting them costs one branch.
    """
    if isinstance(gold, str):
        return _gold_from_str(gold)
    if isinstance(gold, Mapping):
        return _gold_from_mapping(gold)
    raise TypeError(f"unsupported countdown gold of type {type(gold).__name__}")


# --- parameters and task --------------------------------------------------------------------------


@dataclass
class CountdownParams(SplitParams):
    """Countdown generation settings (defaults: the paper's 3-number setting)."""

    num_numbers: int = 3
    min_number: int = 1
    max_number: int = 100
    min_target: int = 1
    max_target: int = 1000

    def problems(self) -> list[tuple[str, str, str]]:
        out = super().problems()
        if not 2 <= self.num_numbers <= MAX_NUMBERS:
            out.append(
                (
                    "num_numbers",
                    f"must be between 2 and {MAX_NUMBERS}, got {self.num_numbers}",
                    "use 2-6 as in the paper",
                )
            )
        if self.min_number < 1:
            out.append(("min_number", f"must be >= 1, got {self.min_number}", "use 1"))
        if self.max_number < self.min_number:
            out.append(
                (
                    "max_number",
                    f"max_number {self.max_number} < min_number {self.min_number}",
                    "make max_number >= min_number",
                )
            )
        if self.max_number >= 10**9:
            out.append(("max_number", f"must be below 10**9, got {self.max_number}", "use e.g. 100"))
        if self.min_target < 1:
            out.append(("min_target", f"must be >= 1, got {self.min_target}", "use 1"))
        if self.max_target < self.min_target:
            out.append(
                (
                    "max_target",
                    f"max_target {self.max_target} < min_target {self.min_target}",
                    "make max_target >= min_target",
                )
            )
        if self.max_target >= 10**12:
            out.append(("max_target", f"must be below 10**12, got {self.max_target}", "use e.g. 1000"))
        return out


DEFAULT_TEMPLATE = """\
Using the numbers {numbers}, build an arithmetic expression that equals {target}.

Rules:
- Use every number in the list exactly once.
- Only +, -, * and / are allowed, with parentheses where needed.

Work through the problem step by step. When you are done, write your final answer between <answer> and </answer>. The answer can be a single equation, for example <answer>(1 + 2) * 3</answer>, or a series of steps, one operation per line, each using the given numbers or results of earlier steps, for example:
<answer>
Step 1: 1 + 2 = 3
Step 2: 3 * 3 = 9
</answer>"""


@register
class Countdown(GeneratedTask):
    name: ClassVar[str] = "countdown"
    aliases: ClassVar[tuple] = ("countdown_numbers", "cd", "numbers_game")
    Params: ClassVar[type] = CountdownParams
    default_template: ClassVar[str] = DEFAULT_TEMPLATE
    field_names: ClassVar[tuple] = ("numbers", "target")

    def tag(self) -> str:
        return f"n{self.params.num_numbers}"

    def _draw(self, rng: random.Random, split: str) -> Optional[Draw]:
        p: CountdownParams = self.params
        numbers = [rng.randint(p.min_number, p.max_number) for _ in range(p.num_numbers)]
        # pool of (value, expression text, is_leaf); intermediate values stay positive
        # integers, which keeps the known solution writable in either answer form
        pool = [(n, str(n), True) for n in numbers]
        cap = max(p.max_target, p.max_number) * max(p.max_number, 2)
        steps = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            (a, ea, la), (b, eb, lb) = pool[i], pool[j]
            last = len(pool) == 2
            options = []
            for flipped, (x, ex, lx, y, ey, ly) in enumerate(((a, ea, la, b, eb, lb), (b, eb, lb, a, ea, la))):
                # + and * are commutative: offer them in one orientation only
                candidates = [("-", x - y)] if flipped else [("+", x + y), ("*", x * y), ("-", x - y)]
                if y > 1 and x % y == 0:
                    candidates.append(("/", x // y))
                for sym, r in candidates:
                    if last:
                        if not (p.min_target <= r <= p.max_target) or not self.in_split(str(r), split):
                            continue
                    elif not 0 < r <= cap:
                        continue
                    options.append((sym, r, x, ex, lx, y, ey, ly))
            if not options:
                return None
            # pick the operation first, uniformly among those available, so * and / are
            # not crowded out by the many + and - options
            chosen = rng.choice(sorted({o[0] for o in options}))
            sym, r, x, ex, lx, y, ey, ly = rng.choice([o for o in options if o[0] == chosen])
            steps.append(f"{x} {sym} {y} = {r}")
            left = ex if lx else f"({ex})"
            right = ey if ly else f"({ey})"
            for k in sorted((i, j), reverse=True):
                pool.pop(k)
            pool.append((r, f"{left} {sym} {right}", False))
        target, expression, _ = pool[0]
        return Draw(
            key=f"{sorted(numbers)}->{target}",
            partition_key=str(target),
            fields={"numbers": "[" + ", ".join(map(str, numbers)) + "]", "target": str(target)},
            gold=make_gold(numbers, target),
            meta={
                "numbers": numbers,
                "target": target,
                "solution": expression,
                "steps": [f"Step {k}: {s}" for k, s in enumerate(steps, 1)],
            },
        )

    def _score(self, answer: str, gold: Any) -> bool:
        if isinstance(gold, str) and len(answer) <= _CACHED_ANSWER_CHARS:
            return _score_cached(answer, gold)
        numbers, target = parse_gold(gold)
        return _verify_sorted(answer, numbers, target)


# Real answers are short; only those are cached, so the cache stays a few MB at most.
_CACHED_ANSWER_CHARS = 256


@lru_cache(maxsize=1 << 15)
def _score_cached(answer: str, gold: str) -> bool:
    # GRPO draws 16 rollouts per prompt and many end in the same answer: cache the verdict
    numbers, target = parse_gold(gold)
    return _verify_sorted(answer, numbers, target)
