"""Accuracy metrics on hand-written records: unbiased pass@k, question-level standard error."""
from __future__ import annotations

import itertools
import math

import pytest

from skill_factory.evaluation.metrics import mean_stderr, pass_at_k, summarize_task


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k by enumerating every k-subset of n samples (c of them correct)."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k))


def test_pass_at_k_known_values_and_bounds():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the mean accuracy
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - math.comb(197, 100) / math.comb(200, 100))
    for bad in [(4, 5, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_mean_stderr():
    assert mean_stderr([]) == (0.0, 0.0)
    assert mean_stderr([1.0]) == (1.0, 0.0)
    mean, se = mean_stderr([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5
    assert se == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))


def rec(qid, correct, extracted="x", tokens=10, text="abc", finish="stop"):
    return {"question_id": qid, "correct": correct, "extracted": extracted, "num_tokens": tokens,
            "text": text, "finish_reason": finish}


def test_summarize_task_clusters_by_question():
    # q1: 2/2 right, q2: 0/2 right (one without an answer, one truncated)
    records = [rec("q1", True), rec("q1", True, tokens=20), rec("q2", False, extracted=None),
               rec("q2", False, finish="length", text="abcdef")]
    s = summarize_task(records, n=2, ks=[1, 2, 4])
    assert s["questions"] == 2 and s["responses"] == 4
    assert s["accuracy"] == 0.5
    # the standard error is over the 2 per-question means (1.0 and 0.0), not over 4 samples
    assert s["stderr"] == pytest.approx(0.5)
    assert s["pass_at_k"] == {"1": 0.5, "2": 0.5}  # k=4 > n is not reported
    assert s["format_rate"] == 0.75
    assert s["truncated_rate"] == 0.25
    assert s["mean_tokens"] == 12.5
    assert s["mean_chars"] == 3.8


def test_summarize_task_pass_at_k_mixed_question():
    records = [rec("q", c) for c in (True, False, False, False)]
    s = summarize_task(records, n=4, ks=[1, 2, 4])
    assert s["pass_at_k"] == {"1": 0.25, "2": 0.5, "4": 1.0}
    assert s["stderr"] == 0.0  # one question: no spread to estimate
