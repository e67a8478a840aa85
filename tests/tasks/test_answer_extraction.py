"""Answer-tag extraction and number normalisation shared by every task."""

from __future__ import annotations

from fractions import Fraction

import pytest

from skill_factory.tasks.answer import as_answer, extract_last_answer, format_number, numbers_equal, parse_number

TRACE = """<think>
<sample>
Try 34 + 37 + 26 = 97.
<answer>34 + 37 + 26</answer>
</sample>
<reflect>
97 is not 374. <verdict>Incorrect</verdict>
</reflect>
Let me try again.
<sample>
<answer>34 * (37 - 26)</answer>
</sample>
<reflect>
<verdict>Correct</verdict>
</reflect>
</think>

So the final answer is:

<answer>
34 * (37 - 26)
</answer>"""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>42</answer>", "42"),
        ("reasoning <answer> 42 </answer> trailing", "42"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        (TRACE, "34 * (37 - 26)"),
        ("no tags at all", None),
        ("", None),
        ("<answer>unclosed", None),
        # the last block is cut off: no final answer, no fallback to the earlier one
        ("<answer>1</answer> and finally <answer>2", None),
        ("</answer> only a close", None),
        ("<Answer>42</Answer>", None),
        ("<answer></answer>", ""),
        ("Assistant: <answer>7</answer>", "7"),  # role prefixes are irrelevant
        ("<|im_start|>assistant\n<answer>7</answer><|im_end|>", "7"),
        (None, None),
        (12, None),
        (b"<answer>7</answer>", None),
    ],
)
def test_extract_last_answer(text, expected):
    assert extract_last_answer(text) == expected


def test_extract_on_a_megabyte_is_fast_and_exact():
    big = "x" * 1_000_000 + "<answer>5</answer>" + "y" * 1_000_000
    assert extract_last_answer(big) == "5"
    assert extract_last_answer("<answer>" * 200_000) is None


def test_as_answer_extracts_only_when_tagged():
    assert as_answer("<answer>3</answer>") == "3"
    assert as_answer("  3 ") == "3"
    assert as_answer(None) is None


@pytest.mark.parametrize(
    "text, value",
    [
        ("72", 72),
        ("72.00", 72),
        ("$1,080", 1080),
        ("1,234,567", 1234567),
        ("-3", -3),
        ("2.5", Fraction(5, 2)),
        ("3/4", Fraction(3, 4)),
        ("\\boxed{18}", 18),
        ("18 dollars", 18),
        ("5 + 3 = 8", 8),
        ("72.", 72),
        (".5", Fraction(1, 2)),
        ("25%", 25),
        ("", None),
        ("no number", None),
        ("٧٢", None),  # Arabic-Indic digits are not read as 72
        ("７２", None),  # full-width digits neither
        ("1" * 5000, None),  # too long to scan
        ("1/0", None),
    ],
)
def test_parse_number(text, value):
    got = parse_number(text)
    if value is None:
        assert got is None
    else:
        assert got == Fraction(value)


def test_numbers_equal_and_format():
    assert numbers_equal("1,080", "1080")
    assert numbers_equal("$1080.00", "1080")
    assert not numbers_equal("1081", "1080")
    assert not numbers_equal(None, "1080")
    assert numbers_equal("7", 7)
    assert format_number(Fraction(5, 2)) == "2.5"
    assert format_number(Fraction(-1, 8)) == "-0.125"
    assert format_number(Fraction(1, 3)) == "1/3"
    assert format_number(Fraction(1080)) == "1080"
