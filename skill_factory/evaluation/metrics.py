"""Accuracy metrics of graded responses: mean and standard error, unbiased pass@k, format rate.

    from skill_factory.evaluation.metrics import pass_at_k, summarize_task
    pass_at_k(n=4, c=1, k=2)                     # 0.5
    summarize_task(records, n=4, ks=[1, 2, 4])   # accuracy, stderr, pass@k, format rate, length

Why these definitions:

- **Accuracy** is the mean over every sample of every question. With ``n`` samples per
  question the samples of one question are not independent, so the **standard error** is
  computed over questions: the standard deviation (ddof 1) of the per-question mean accuracy
  divided by the square root of the number of questions. With ``n = 1`` this is the usual
  binomial standard error (with the unbiased variance).
- **pass@k** uses the unbiased estimator of Chen et al. (2021): with ``c`` correct out of
  ``n`` samples, ``1 - C(n-c, k) / C(n, k)``, averaged over questions. It is reported only for
  ``k <= n``; drawing k of the n samples without replacement is what makes it unbiased.
- **Format rate** is the share of responses with an extractable final answer (the task's
  extractor found a last ``<answer>`` block), so an accuracy drop can be told apart from a
  model that stopped answering in the required form.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one question with ``c`` correct of ``n`` samples (``k <= n``)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k) as a product, which stays exact-ish for large n
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (ddof 1); (0, 0) for no values, SE 0 for one."""
    m = len(values)
    if m == 0:
        return 0.0, 0.0
    mean = sum(values) / m
    if m == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (m - 1)
    return mean, math.sqrt(var / m)


def by_question(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records grouped by ``question_id``, in first-seen order."""
    groups: dict[str, list] = defaultdict(list)
    for r in records:
        groups[r["question_id"]].append(r)
    return dict(groups)


def summarize_task(records: Sequence[Mapping[str, Any]], n: int, ks: Sequence[int]) -> dict:
    """Accuracy metrics of one (suite entry, decoding): records carry ``question_id``,
    ``correct``, ``extracted`` (None = no final answer), ``num_tokens`` and ``text``."""
    groups = by_question(records)
    per_question = [sum(bool(r["correct"]) for r in rs) / len(rs) for rs in groups.values()]
    accuracy, stderr = mean_stderr(per_question)
    pass_k = {}
    for k in sorted(set(ks)):
        if 1 <= k <= n:
            vals = [pass_at_k(len(rs), sum(bool(r["correct"]) for r in rs), k)
                    for rs in groups.values() if len(rs) >= k]
            pass_k[str(k)] = _round(sum(vals) / len(vals)) if vals else 0.0
    total = len(records)
    return {
        "questions": len(groups),
        "responses": total,
        "n": n,
        "accuracy": _round(accuracy),
        "stderr": _round(stderr),
        "pass_at_k": pass_k,
        "format_rate": _round(_share(r["extracted"] is not None for r in records)),
        "truncated_rate": _round(_share(r.get("finish_reason") == "length" for r in records)),
        "mean_tokens": _round(_mean(r["num_tokens"] for r in records), 2),
        "mean_chars": _round(_mean(len(r["text"]) for r in records), 1),
    }


def _share(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _round(x: float, digits: int = 4) -> float:
    return round(float(x), digits)
