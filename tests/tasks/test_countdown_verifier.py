"""Countdown verifier: hand-written tables of answers and responses, plus properties."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skill_factory.tasks import build_task
from skill_factory.tasks.countdown import make_gold, parse_gold, verify

TASK = build_task("countdown")
GOLD = make_gold([34, 37, 26], 374)  # 34 * (37 - 26) = 374


def score(answer, gold=GOLD):
    return TASK.score(answer, gold)


# --- extracted answers --------------------------------------------------------------------

RIGHT = [
    "34 * (37 - 26)",
    "(37 - 26) * 34",
    "34*(37-26)",
    "  34 * ( 37 - 26 )  ",
    "34 * (37 - 26) = 374",
    "(37-26)*34=374",
    "((34)) * ((37 - 26))",
    "34 * (37\n - 26)",  # a line break inside one expression
    "34 × (37 − 26)",  # look-alike operators
    "34\u00a0*\u00a0(37 - 26)",  # no-break spaces
    "Step 1: 37 - 26 = 11\nStep 2: 34 * 11 = 374",
    "step 1: 37 - 26 = 11\n\nSTEP 2: 11 * 34 = 374\n",
    "Step 1: 37 - 26 = 11\r\nStep 2: 34 * 11 = 374",
    "Step 1: 34 * (37 - 26) = 374",  # one step may hold a whole expression
    "Step 1: 37-26=11\nStep 2: 34*11=374",
]

WRONG = [
    # wrong value or wrong numbers
    "34 * 37 - 26",
    "34 + 37 + 26",
    "34 * 11",  # 11 is not a given number
    "34 * (37 - 26) + 26 - 26",  # 26 used three times
    "374",
    "34 * (37 - 26) = 375",  # claimed result is not the target
    "34 * (37 - 26) = 374 = 374",
    "374 = 34 * (37 - 26)",  # reversed equation
    "34 * (37 - 26) = 37 * 10 + 4",
    "34 * (37 - 26) =",
    "34 * (37 - 26).",
    # malformed
    "",
    "   ",
    "(your answer)",
    "34 * (37 - 26",
    "34 * 37 - 26)",
    "34 (37 - 26)",
    "34 * (37 - 26) 5",
    "034 * (37 - 26)",  # leading zero is not an integer literal in Python 3
    # forbidden operators and literals
    "34 ** 2",
    "34 // 2",
    "34 % 26",
    "34 ^ 37",
    "34.0 * (37 - 26)",
    "3.4e1 * (37 - 26)",
    "34 * (37 - 26) * 1j",
    "0x22 * (37 - 26)",
    "3_4 * (37 - 26)",
    # unary tricks
    "-34 * (26 - 37)",
    "34 * -(26 - 37)",
    "+34 * (37 - 26)",
    "34 * (37 - 26) - -0",
    # names, calls, anything else
    "abs(34) * (37 - 26)",
    "x",
    "__import__('os').system('true')",
    "[34, 37, 26]",
    "lambda: 374",
    "34 * (37 - 26) if True else 0",
    "34 * (37 - 26); 1",
    "34 * (37 - 26) # comment",
    "True * 374",
    "'374'",
    # unicode digits that Python itself would accept
    "３４ * (３７ - ２６)",
    "٣٤ * (٣٧ - ٢٦)",
    # steps form gone wrong
    "Step 1: 37 - 26 = 12\nStep 2: 34 * 12 = 408",  # false claim, wrong target
    "Step 1: 37 - 26 = 11\nStep 2: 34 * 11 = 375",  # false claim
    "Step 1: 37 - 26 = 11\nStep 2: 34 * 11 = 374\nStep 3: 374 * 1 = 374",  # too many steps / 1 not given
    "Step 1: 37 - 26 = 11\nStep 2: 11 * 11 = 121",  # 11 used twice
    "Step 1: 34 * 11 = 374\nStep 2: 37 - 26 = 11",  # uses a result before it exists
    "Step 1: 37 - 26 = 11\n34 * 11 = 374",  # non-step line
    "Step 1: 37 - 26 = 11\nStep 2: 34 * 11 = 374\nSo the answer is 374",
    "Step 1: 37 - 26 = 11\nStep 2: 34 * 11",  # no result
    "Step 1: 37 - 26 = 11\nStep 2: 374 = 374",  # no operation
    "Step 1: 37 - 26 = 11.0\nStep 2: 34 * 11 = 374",
    "Step 1: 37 - 26 = 11 = 11\nStep 2: 34 * 11 = 374",
    "Step 1: 37 ** 1 = 37\nStep 2: 37 - 26 = 11",
    "Step 1: 37 - 26 = 11",  # stops early: 34 unused
]


@pytest.mark.parametrize("answer", RIGHT)
def test_right_answers(answer):
    assert score(answer) is True


@pytest.mark.parametrize("answer", WRONG)
def test_wrong_answers(answer):
    assert score(answer) is False


# --- whole responses (what sampling and the reward see) ---------------------------------------

TRACE_RIGHT_LAST = """<think>
<sample>
First try: 34 + 37 + 26 = 97, too small.
<answer>34 + 37 + 26</answer>
</sample>
<reflect>
34 + 37 + 26 = 97, not 374. <verdict>Incorrect</verdict>
</reflect>
Let me try a different approach.
<sample>
37 - 26 = 11 and 34 * 11 = 374.
<answer>
Step 1: 37 - 26 = 11
Step 2: 34 * 11 = 374
</answer>
</sample>
<reflect>
37 - 26 = 11, 34 * 11 = 374 <verdict>Correct</verdict>
</reflect>
</think>

That is the answer.

<answer>
34 * (37 - 26)
</answer>"""

TRACE_RIGHT_INSIDE_WRONG_LAST = TRACE_RIGHT_LAST.replace(
    "<answer>\n34 * (37 - 26)\n</answer>", "<answer>\n34 + 37 + 26\n</answer>"
)


@pytest.mark.parametrize(
    "response, extracted, correct",
    [
        ("<answer>34 * (37 - 26)</answer>", "34 * (37 - 26)", True),
        ("Let me think.\n<answer>(37 - 26) * 34 = 374</answer>", "(37 - 26) * 34 = 374", True),
        ("<answer>34+37+26</answer> wait, no: <answer>34*(37-26)</answer>", "34*(37-26)", True),
        ("<answer>34*(37-26)</answer> hmm, maybe <answer>34+37+26</answer>", "34+37+26", False),
        (TRACE_RIGHT_LAST, "34 * (37 - 26)", True),
        (TRACE_RIGHT_INSIDE_WRONG_LAST, "34 + 37 + 26", False),
        ("34 * (37 - 26)", None, False),  # untagged: no answer
        ("<answer>34 * (37 - 26)", None, False),  # truncated
        ("Assistant: <answer>34 * (37 - 26)</answer>", "34 * (37 - 26)", True),
        ("<answer>1/0</answer>", "1/0", False),
        ("", None, False),
    ],
)
def test_grade_responses(response, extracted, correct):
    assert TASK.grade(response, GOLD) == (extracted, correct)


def test_score_accepts_a_whole_response_too():
    assert TASK.score(TRACE_RIGHT_LAST, GOLD) is True
    assert TASK.score(TRACE_RIGHT_INSIDE_WRONG_LAST, GOLD) is False


# --- the public peer's known mistakes --------------------------------------------------------


@pytest.mark.parametrize(
    "numbers, target, answer",
    [
        ([2, 3, 1], 8, "2**3*1"),  # ** reaches the target
        ([7, 2, 1], 3, "7//2*1"),  # // reaches the target
        ([7, 4, 2], 6, "7 % 4 * 2"),
        ([1, 5, 2], 3, "1.5*2"),  # '1.5' is not the numbers 1 and 5
        ([1, 5, 2], 3, "1.5 * 2 = 3"),
    ],
)
def test_rejects_what_a_regex_and_eval_checker_accepts(numbers, target, answer):
    assert verify(answer, numbers, target) is False


# --- exact arithmetic, division by zero, negative intermediates -----------------------------------


def test_exact_rational_arithmetic():
    # the classic 8 / (3 - 8 / 3) = 24 needs exact fractions
    assert verify("8 / (3 - 8 / 3)", [8, 3, 8, 3], 24) is True
    assert verify("1 / 3 * 3 * 5", [1, 3, 3, 5], 5) is True
    assert verify("(1 / 3 + 1 / 3 + 1 / 3) * 7", [1, 3, 1, 3, 1, 3, 7], 7) is True


@pytest.mark.parametrize(
    "answer",
    ["3 / (5 - 5)", "3 / 0", "(5 - 5) / (5 - 5)", "Step 1: 5 - 5 = 0\nStep 2: 3 / 0 = 3"],
)
def test_division_by_zero_is_wrong_not_an_exception(answer):
    assert verify(answer, [5, 5, 3], 3) is False
    assert verify(answer, [3, 0], 3) is False


def test_steps_with_negative_intermediate_results():
    assert verify("Step 1: 3 - 5 = -2\nStep 2: 4 + -2 = 2", [3, 5, 4], 2) is True
    assert verify("Step 1: 3 - 5 = -2\nStep 2: 4 - -2 = 6", [3, 5, 4], 6) is True
    # a negative literal that is not an earlier result is not allowed
    assert verify("Step 1: 4 + -3 = 1\nStep 2: 1 * 5 = 5", [3, 5, 4], 5) is False
    # and in expression form a unary minus is never allowed
    assert verify("4 + -2", [4, 2], 2) is False


def test_step_results_may_repeat_given_values():
    # 2 + 3 = 5 then 5 * 5: one 5 is given, the other is the result
    assert verify("Step 1: 2 + 3 = 5\nStep 2: 5 * 5 = 25", [5, 2, 3], 25) is True
    assert verify("Step 1: 2 + 3 = 5\nStep 2: 5 * 5 = 25\n", [2, 3, 1], 25) is False


# --- bounds: nothing can hang, recurse out, or exhaust memory ----------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "9" * 100_000,
        "9" * 19 + " * (37 - 26)",  # literal too long
        "(" * 100_000 + "1" + ")" * 100_000,
        "(" * 300 + "34" + ")" * 300 + " * (37 - 26)",  # nesting beyond the bound
        "1+" * 500_000 + "1",
        "-" * 100_000 + "1",
        "9**9**9**9**9",
        "2**2**2**2**2**2**2",
        "99999999999999999 * 99999999999999999 * 99999999999999999",
        "Step 1: 1 + 1 = 2\n" * 50_000,
        "x" * 1_000_000,
        "\n" * 1_000_000,
        "=" * 1_000_000,
    ],
)
def test_hostile_inputs_are_fast_and_wrong(answer):
    start = time.perf_counter()
    assert TASK.score(answer, GOLD) is False
    assert TASK.score(f"<answer>{answer}</answer>", GOLD) is False
    assert time.perf_counter() - start < 1.0


def test_redundant_parentheses_within_bounds_are_fine():
    assert TASK.score("(" * 90 + "34" + ")" * 90 + " * (37 - 26)", GOLD) is True


def test_megabyte_responses():
    padding = "Let me think about this. " * 40_000  # ~1 MB of reasoning
    assert TASK.grade(padding + "<answer>34 * (37 - 26)</answer>", GOLD) == ("34 * (37 - 26)", True)
    assert TASK.grade("<answer>" + "1+" * 500_000 + "1</answer>", GOLD)[1] is False
    assert TASK.grade("<answer>" * 100_000 + "</answer>" * 100_000, GOLD)[1] is False


def test_huge_numbers_given_as_problem_are_still_exact():
    big = 10**15
    assert verify(f"{big} * {big} - {big}", [big, big, big], big * big - big) is True


# --- gold handling ----------------------------------------------------------------------------------


def test_gold_forms():
    assert parse_gold(GOLD) == ((26, 34, 37), 374)
    # TinyZero-style mapping with an array of numbers
    assert TASK.score("34 * (37 - 26)", {"numbers": (34, 37, 26), "target": 374}) is True
    for bad in [None, "", "not json", "{}", '{"numbers": [1.5, 2], "target": 3}', 17, {"target": 3}]:
        assert TASK.score("34 * (37 - 26)", bad) is False


def test_non_string_answers_never_raise():
    for junk in [None, 17, 3.5, b"34", ["34"], {"a": 1}, object()]:
        assert TASK.score(junk, GOLD) is False
        assert TASK.grade(junk, GOLD) == (None, False)


# --- properties -----------------------------------------------------------------------------------------


class _Oracle:
    """A tiny independent recursive-descent evaluator (test oracle; no eval)."""

    def __init__(self, text):
        self.toks = []
        i = 0
        while i < len(text):
            c = text[i]
            if c.isspace():
                i += 1
            elif c.isdigit():
                j = i
                while j < len(text) and text[j].isdigit():
                    j += 1
                self.toks.append(int(text[i:j]))
                i = j
            else:
                self.toks.append(c)
                i += 1
        self.pos = 0
        self.literals = []

    def peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self):
        self.pos += 1
        return self.toks[self.pos - 1]

    def expr(self):
        v = self.term()
        while self.peek() in ("+", "-"):
            v = v + self.term() if self.take() == "+" else v - self.term()
        return v

    def term(self):
        v = self.atom()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                v = v * self.atom()
            else:
                d = self.atom()
                if d == 0:
                    raise ZeroDivisionError
                v = v / d
        return v

    def atom(self):
        t = self.take()
        if t == "(":
            v = self.expr()
            assert self.take() == ")"
            return v
        assert isinstance(t, int)
        self.literals.append(t)
        return Fraction(t)


def oracle_value(text):
    o = _Oracle(text)
    try:
        value = o.expr()
    except ZeroDivisionError:
        return None, o.literals
    return value, o.literals


@st.composite
def expressions(draw, max_leaves=6):
    """Random expression trees over small integers, rendered with full parentheses."""
    n = draw(st.integers(1, max_leaves))
    items = [str(draw(st.integers(0, 120))) for _ in range(n)]
    while len(items) > 1:
        i = draw(st.integers(0, len(items) - 2))
        op = draw(st.sampled_from("+-*/"))
        items[i : i + 2] = [f"({items[i]} {op} {items[i + 1]})"]
    return items[0]


@settings(max_examples=150, deadline=None)
@given(expressions(), st.integers(0, 10_000), st.booleans())
def test_verifier_agrees_with_an_independent_oracle(expr, target, use_value_as_target):
    value, literals = oracle_value(expr)
    if use_value_as_target and value is not None and value.denominator == 1:
        target = int(value)
    expected = value is not None and value == target
    if len(literals) < 2:
        return
    assert verify(expr, literals, target) is expected
    # with one number changed to something not given, never correct
    assert verify(expr, [*literals[:-1], literals[-1] + 1000], target) is False


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 6),
    seed=st.integers(0, 2**32),
    split=st.sampled_from(["train", "val", "test"]),
)
def test_generated_problems_verify_and_mutations_fail(n, seed, split):
    task = build_task("countdown", num_numbers=n)
    (q,) = task.questions(split, 1, seed=seed)
    numbers, target = q.meta["numbers"], q.meta["target"]
    solution, steps = q.meta["solution"], "\n".join(q.meta["steps"])
    assert task.score(solution, q.gold)
    assert task.score(steps, q.gold)
    assert task.grade(f"<think>…</think><answer>{solution} = {target}</answer>", q.gold)[1]

    # mutations that can never be right
    assert not task.score(f"{solution} + 0", q.gold)  # 0 is never a given number (min 1)
    assert not task.score(f"({solution}) ** 1", q.gold)
    assert not task.score(f"{solution} * 1" if 1 not in numbers else f"{solution} + 1000", q.gold)
    assert not task.score(f"{solution} = {target + 1}", q.gold)
    assert not task.score("\n".join(q.meta["steps"][:-1]), q.gold)  # stops one step short
    bumped = q.meta["steps"][-1].rsplit("=", 1)[0] + f"= {target + 1}"
    assert not task.score("\n".join([*q.meta["steps"][:-1], bumped]), q.gold)
    # one literal changed to a value that is not given
    lits = oracle_value(solution)[1]
    assert sorted(lits) == sorted(numbers)
    absent = max(numbers) + 1
    first = str(lits[0])
    mutated = solution.replace(first, str(absent), 1)
    assert not task.score(mutated, q.gold)

    # an operator swapped: correct exactly when the oracle says the value is still the target
    for k, ch in enumerate(solution):
        if ch in "+-*/":
            for other in "+-*/".replace(ch, ""):
                swapped = solution[:k] + other + solution[k + 1 :]
                value, _ = oracle_value(swapped)
                assert task.score(swapped, q.gold) is (value is not None and value == target)
            break
