"""Training examples for the embedded tiny model, made by the project's Countdown solver.

Why this mix: the method needs a base model whose own samples are sometimes right and
sometimes wrong, and whose own reflections are sometimes wrong. So:

- *answer* examples (a question in one of the model's prompt variants -> an answer) use the
  generator's known solution most of the time and a plausible wrong expression otherwise
  (the given numbers, every one used once, combined into a value that misses the target);
- *check* examples (the reflection prompt with a question and a response -> a short check
  and a verdict) show the arithmetic before the verdict, e.g.
  ``37 - 26 = 11, 11 * 34 = 374, target 374 <verdict>Correct</verdict>``, because recomputing
  is something a tiny model can learn where a bare judgement is not; a configurable share of
  verdicts is flipped so reflections stay imperfect.

Variants listed in ``model.bootstrap.step_form_variants`` answer with ``Step k:`` lines,
the others with one expression.
"""
from __future__ import annotations

import ast
import random
from collections import Counter
from fractions import Fraction
from typing import Optional, Sequence

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
MAX_CHECK_NUMBERS = 8


def format_answer(expression: str, steps: Sequence[str], step_form: bool) -> str:
    """The assistant's answer in expression or ``Step k:`` form, inside answer tags."""
    if step_form:
        return "<answer>\n" + "\n".join(steps) + "\n</answer>"
    return f"<answer>{expression}</answer>"


def canonical_solution(expression: str) -> tuple[str, list[str]]:
    """One fixed way of writing a solution: (expression text, ``Step k:`` lines).

    The generator writes a solution in whichever order it combined the numbers, so one
    solution has many spellings (``88 + (89 - 32)``, ``(89 - 32) + 88``, ``(88 - 32) + 89``).
    A tiny model trained on all of them spends its capacity on that spread instead of on
    which numbers and operations reach the target. Here a chain of ``+``/``-`` (or of
    ``*``/``/``) is flattened into its terms and rewritten left to right: added (multiplied)
    terms first, then subtracted (divided) ones, each group bracketed parts first, then
    larger values first. Every intermediate result stays a positive whole number.
    """
    steps: list[str] = []
    inverse = {"+": "-", "*": "/"}

    def terms(node, family: str, sign: bool, out: list) -> None:
        op = _OPS.get(type(node.op)) if isinstance(node, ast.BinOp) else None
        if op is not None and op in (family, inverse[family]):
            terms(node.left, family, sign, out)
            terms(node.right, family, sign if op == family else not sign, out)
        else:
            out.append((sign, walk(node)))

    def walk(node) -> tuple[str, Fraction, bool]:
        if isinstance(node, ast.Constant):
            return str(node.value), Fraction(node.value), True
        family = "+" if _OPS[type(node.op)] in "+-" else "*"
        parts: list = []
        terms(node, family, True, parts)
        order = sorted(parts, key=lambda p: (not p[0], p[1][2], -p[1][1]))
        text, value, leaf = order[0][1]
        for positive, (t, v, lf) in order[1:]:
            op = family if positive else inverse[family]
            new_value = _arith(value, op, v)
            steps.append(f"Step {len(steps) + 1}: {_show(value)} {op} {_show(v)} = {_show(new_value)}")
            text = " ".join((text if leaf else f"({text})", op, t if lf else f"({t})"))
            value, leaf = new_value, False
        return text, value, leaf

    text, _, _ = walk(ast.parse(expression, mode="eval").body)
    return text, steps


def random_expression(rng: random.Random, numbers: Sequence[int]) -> tuple[int, str, list[str]]:
    """A random expression using every number once, with positive whole intermediates.

    Returns (value, expression text, ``Step k:`` lines). Used for plausible wrong answers.
    """
    pool = [(n, str(n), True) for n in numbers]
    steps = []
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (a, ea, la), (b, eb, lb) = pool[i], pool[j]
        if a < b:
            (a, ea, la), (b, eb, lb) = (b, eb, lb), (a, ea, la)
        ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
        op = rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // max(b, 1)}[op]
        steps.append(f"Step {len(steps) + 1}: {a} {op} {b} = {value}")
        text = f"{ea if la else '(' + ea + ')'} {op} {eb if lb else '(' + eb + ')'}"
        for k in sorted((i, j), reverse=True):
            pool.pop(k)
        pool.append((value, text, False))
    value, text, _ = pool[0]
    return value, text, steps


def wrong_answer(rng: random.Random, numbers: Sequence[int], target: int,
                 step_form: bool) -> Optional[str]:
    """A plausible wrong answer: the right numbers, a value other than the target."""
    for _ in range(20):
        value, text, steps = random_expression(rng, numbers)
        if value != target:
            return format_answer(*canonical_solution(text), step_form)
    return None


def _arith(a: Fraction, op: str, b: Fraction) -> Optional[Fraction]:
    if op == "/" and b == 0:
        return None
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]


def _show(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _expression_lines(text: str) -> Optional[tuple[list[str], Fraction, list[int]]]:
    """Recompute an expression operation by operation (``ast`` only, no evaluation)."""
    try:
        tree = ast.parse(text.strip().split("=")[0], mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    lines: list[str] = []
    used: list[int] = []

    def walk(node, depth=0):
        if depth > 20:
            raise ValueError
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = walk(node.left, depth + 1), walk(node.right, depth + 1)
            op = _OPS[type(node.op)]
            result = _arith(a, op, b)
            if result is None or abs(result) > 10**9:
                raise ValueError
            lines.append(f"{_show(a)} {op} {_show(b)} = {_show(result)}")
            return result
        raise ValueError

    try:
        value = walk(tree)
    except (ValueError, RecursionError):
        return None
    return lines, value, used


def _step_lines(text: str) -> Optional[tuple[list[str], Fraction, list[int]]]:
    """Recompute ``Step k: a op b = c`` lines with the true results."""
    lines, used, produced = [], [], []
    value = None
    for raw in text.strip().splitlines():
        body = raw.split(":", 1)[1] if ":" in raw else raw
        parsed = _expression_lines(body)
        if parsed is None or len(parsed[0]) != 1:
            return None
        step, value, literals = parsed
        for lit in literals:  # an earlier result may be reused once
            if Fraction(lit) in produced:
                produced.remove(Fraction(lit))
            else:
                used.append(lit)
        produced.append(value)
        lines += step
    if value is None:
        return None
    return lines, value, used


# Fixed wording of the checks, added to the tokenizer's corpus so each is a few tokens.
CHECK_PHRASES = ("target", "wrong numbers", "cannot read the answer", "no answer",
                 "<verdict>Correct</verdict>", "<verdict>Incorrect</verdict>")


def check_text(answer: Optional[str], numbers: Sequence[int], target: int, verdict: bool) -> str:
    """The tiny model's reflection: the recomputed arithmetic, the target, the verdict."""
    tag = "<verdict>Correct</verdict>" if verdict else "<verdict>Incorrect</verdict>"
    if answer is None:
        return f"no answer {tag}"
    parsed = _step_lines(answer) if "Step" in answer else _expression_lines(answer)
    if parsed is None:
        return f"cannot read the answer {tag}"
    lines, value, used = parsed
    parts = lines[:MAX_CHECK_NUMBERS] + [f"target {target}"]
    if Counter(used) != Counter(numbers):
        parts.append("wrong numbers")
    return ", ".join(parts) + f" {tag}"
