"""Answer-tag extraction and number normalisation shared by every task.

Usage::

    from skill_factory.tasks.answer import extract_last_answer, parse_number
    extract_last_answer("<think>… <answer>3</answer> …</think> <answer>7</answer>")  # -> "7"

Why one module: sampling, reflection filtering, the RL reward and evaluation must agree
on what "the model's final answer" is. SkillFactory traces contain several inner
``<answer>`` blocks (one per ``<sample>``), so the final answer is the **last** block in
the text. We look at the response text only and never at a chat-role prefix, because
verl hands the reward the decoded response alone while sampling may see the full chat.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

#: Any extracted answer longer than this is treated as wrong by every scorer. A real
#: answer to any of our tasks is a few hundred characters at most; the bound keeps the
#: verifiers' cost independent of what a model emits.
MAX_ANSWER_CHARS = 10_000


def extract_last_answer(text: object) -> Optional[str]:
    """Return the stripped content of the last ``<answer>…</answer>`` block, or None.

    The block is the one opened by the *last* ``<answer>`` tag. If that tag is never
    closed (a response cut off by the length limit), there is no final answer: we do not
    fall back to an earlier inner answer, since a truncated trace has not committed to one.
    Tags are matched exactly (lower case, no attributes), as the prompts ask for them.
    Non-string input yields None rather than an exception.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    body_start = start + len(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, body_start)
    if end < 0:
        return None
    return text[body_start:end].strip()


def as_answer(text: object) -> Optional[str]:
    """Normalise the input of a ``score`` call to an extracted answer.

    ``score`` accepts either an already-extracted answer or a whole response: if the text
    still contains an ``</answer>`` tag, the last block is extracted first. An extracted
    answer never contains the tags, so ``score(extract(r)) == score(r)`` for tagged
    responses.
    """
    if not isinstance(text, str):
        return None
    if ANSWER_CLOSE in text or ANSWER_OPEN in text:
        return extract_last_answer(text)
    return text.strip()


# --- numbers -----------------------------------------------------------------------

# ASCII digits only (re.ASCII): "٧٢" or full-width digits are not numbers here, so a
# scorer can never be fooled by look-alike characters.
_NUMBER = re.compile(r"[-+]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)(?:/[0-9]+)?", re.ASCII)
_BOXED = re.compile(r"\\boxed\{(.*)\}", re.ASCII | re.DOTALL)
_LEADING_JUNK = "$€£"
_TRAILING_JUNK = "%.;:$"
_MAX_NUMBER_CHARS = 64
_MAX_SCAN_CHARS = 2_000


def _to_fraction(token: str) -> Optional[Fraction]:
    token = token.replace(",", "")
    if len(token) > _MAX_NUMBER_CHARS:
        return None
    try:
        value = Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def parse_number(text: object) -> Optional[Fraction]:
    """Parse the numeric answer in ``text`` into an exact Fraction, or None.

    Normalisation, chosen for GSM8K-style and long-multiplication answers: surrounding
    ``\\boxed{}``, currency signs, ``%``, thousands separators and a trailing full stop
    are ignored; ``72``, ``72.00``, ``$72`` and ``72.`` are all 72. If the text is not a
    bare number, the **last** number in it counts ("18 dollars", "5 + 3 = 8"), which is
    how a short worded final answer is usually read. Comparison is exact (no floats), and
    inputs longer than a couple of thousand characters are not scanned at all.
    """
    if not isinstance(text, str):
        return None
    s = text.strip()
    if not s or len(s) > _MAX_SCAN_CHARS:
        return None
    boxed = _BOXED.search(s)
    if boxed:
        s = boxed.group(1).strip()
    bare = s.replace(" ", "").lstrip(_LEADING_JUNK).rstrip(_TRAILING_JUNK)
    if _NUMBER.fullmatch(bare):
        return _to_fraction(bare)
    last = None
    for match in _NUMBER.finditer(s):
        last = match.group(0)
    return None if last is None else _to_fraction(last)


def format_number(value: Fraction) -> str:
    """Render an exact number canonically: ``72``, ``-3``, ``2.5``, or ``1/3``."""
    if value.denominator == 1:
        return str(value.numerator)
    # a terminating decimal prints as a decimal, anything else as a ratio
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        sign = "-" if value < 0 else ""
        a = abs(value)
        whole, rest = divmod(a.numerator, a.denominator)
        digits = ""
        while rest:
            rest *= 10
            q, rest = divmod(rest, a.denominator)
            digits += str(q)
        return f"{sign}{whole}.{digits}"
    return f"{value.numerator}/{value.denominator}"


def numbers_equal(answer: object, gold: object) -> bool:
    """True when both sides parse to the same exact number (see ``parse_number``)."""
    a = parse_number(answer)
    if a is None:
        return False
    g = parse_number(gold) if isinstance(gold, str) else None
    if g is None and isinstance(gold, int) and not isinstance(gold, bool):
        g = Fraction(gold)
    return g is not None and a == g
