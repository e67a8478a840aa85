"""Skill-usage metrics of a response, read from its tags: no LLM judge.

    usage = skill_usage(text, lambda s: task.grade(s, gold))   # one response
    summary = summarize_skills(usages)                          # one table row

Why from tags: a SkillFactory model writes its attempts as ``<sample>…</sample>`` blocks and
its checks as ``<reflect>…<verdict>Correct</verdict></reflect>`` (the layout of
``skill_factory.tracebuild.layout``). Each sample carries its own ``<answer>``, so the task's
verifier can grade every attempt, and every verdict can be checked against the grade of the
attempt it judges. That says whether the model verifies *correctly* and retries *when it
should*, on every eval response, at no extra cost.

Per response (``skill_usage``): the number of samples and reflections, each sample's graded
inner answer, each verdict paired with the verifier's grade of the sample before it, and the
verdict on each sample (the first verdict after it, before the next sample).

Summary (``summarize_skills``, micro-averaged over events; ``None`` when there is no event):

- ``samples_per_response``, ``reflections_per_response``, ``multi_sample_rate`` (>= 2 samples),
  ``with_samples_rate`` (>= 1 sample);
- ``verdict_accuracy``: verdicts agreeing with the verifier's grade of the preceding sample;
- ``retry_after_incorrect``: share of incorrect samples followed by another sample;
  ``stop_after_correct``: share of correct samples that are the response's last sample; the
  ``*_verdict`` variants condition on the model's own verdict instead of the verifier's grade;
- ``inner_accuracy`` (over samples) against ``final_accuracy`` (over responses with samples),
  ``any_inner_correct_rate`` (some attempt was right) and ``final_equals_last_inner`` (the final
  answer is the last attempt's answer).

Parsing is tolerant of what small models write: an unclosed ``<sample>`` ends where the next
``<sample>`` or its ``<reflect>`` opens (or at ``</think>``, or the end); a verdict inside a
sample block is part of that attempt's text and is not counted; stray closing tags are ignored.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Optional

from skill_factory.verdicts import parse_verdict

SAMPLE_OPEN, SAMPLE_CLOSE = "<sample>", "</sample>"
REFLECT_OPEN, REFLECT_CLOSE = "<reflect>", "</reflect>"
THINK_CLOSE = "</think>"
_VERDICT = re.compile(r"<\s*verdict\s*>.*?<\s*/\s*verdict\s*>", re.IGNORECASE | re.DOTALL)

Grader = Callable[[str], "tuple[Optional[str], bool]"]


def blocks(text: str, open_tag: str, close_tag: str, ends: tuple[str, ...] = ()) -> list[tuple[int, int, str]]:
    """``(start, end, inner text)`` of each block. An unclosed block ends where the next block
    opens, at the first of ``ends`` (for an attempt: where its check or the thinking ends), or at
    the end of the text."""
    out = []
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return out
        body = start + len(open_tag)
        close = text.find(close_tag, body)
        stops = [i for i in (text.find(t, body) for t in (open_tag, *ends)) if i >= 0]
        stop = min(stops) if stops else -1
        if close >= 0 and (stop < 0 or close < stop):
            out.append((start, close + len(close_tag), text[body:close]))
            pos = close + len(close_tag)
        else:
            end = stop if stop >= 0 else len(text)
            out.append((start, end, text[body:end]))
            pos = end


def skill_usage(text: str, grade: Grader) -> dict:
    """The skill events of one response (JSON-able); ``grade(text) -> (extracted, correct)``
    is the task's verifier against this question's gold."""
    samples = blocks(text, SAMPLE_OPEN, SAMPLE_CLOSE, ends=(REFLECT_OPEN, THINK_CLOSE))
    reflections = blocks(text, REFLECT_OPEN, REFLECT_CLOSE, ends=(SAMPLE_OPEN, THINK_CLOSE))
    graded = [grade(body) for _, _, body in samples]
    verdicts: list[list] = []  # [verdict, grade of the preceding sample]
    sample_verdicts: list[Optional[bool]] = [None] * len(samples)
    for m in _VERDICT.finditer(text):
        pos = m.start()
        if any(s <= pos < e for s, e, _ in samples):
            continue
        before = [i for i, (_, e, _) in enumerate(samples) if e <= pos]
        verdict = parse_verdict(m.group(0))
        if not before or verdict is None:
            continue
        i = before[-1]
        verdicts.append([verdict, bool(graded[i][1])])
        if sample_verdicts[i] is None:
            sample_verdicts[i] = verdict
    return {
        "samples": len(samples),
        "reflections": len(reflections),
        "sample_correct": [bool(c) for _, c in graded],
        "sample_answers": [a for a, _ in graded],
        "verdicts": verdicts,
        "sample_verdicts": sample_verdicts,
    }


def summarize_skills(usages: Iterable[Mapping[str, Any]], finals: Iterable[tuple[Optional[str], bool]]) -> dict:
    """Skill-usage summary of many responses; ``finals`` are their graded final answers."""
    usages, finals = list(usages), list(finals)
    if len(usages) != len(finals):
        raise ValueError(f"{len(usages)} usages for {len(finals)} final answers")
    n = len(usages)
    counts = dict(samples=0, reflections=0, multi=0, with_samples=0, verdicts=0, verdicts_right=0,
                  incorrect=0, retried=0, correct=0, stopped=0, neg_verdict=0, neg_retried=0,
                  pos_verdict=0, pos_stopped=0, inner=0, inner_right=0, finals_with=0, finals_right=0,
                  any_right=0, last_answered=0, final_is_last=0)
    for u, (final_answer, final_correct) in zip(usages, finals):
        k = u["samples"]
        counts["samples"] += k
        counts["reflections"] += u["reflections"]
        counts["multi"] += k >= 2
        for verdict, right in u["verdicts"]:
            counts["verdicts"] += 1
            counts["verdicts_right"] += verdict == right
        for i, right in enumerate(u["sample_correct"]):
            last = i == k - 1
            counts["inner"] += 1
            counts["inner_right"] += right
            if right:
                counts["correct"] += 1
                counts["stopped"] += last
            else:
                counts["incorrect"] += 1
                counts["retried"] += not last
            verdict = u["sample_verdicts"][i]
            if verdict is True:
                counts["pos_verdict"] += 1
                counts["pos_stopped"] += last
            elif verdict is False:
                counts["neg_verdict"] += 1
                counts["neg_retried"] += not last
        if k:
            counts["with_samples"] += 1
            counts["finals_with"] += 1
            counts["finals_right"] += bool(final_correct)
            counts["any_right"] += any(u["sample_correct"])
            last_answer = u["sample_answers"][-1]
            if last_answer is not None:
                counts["last_answered"] += 1
                counts["final_is_last"] += _same(final_answer, last_answer)
    c = counts
    return {
        "responses": n,
        "samples_per_response": _ratio(c["samples"], n),
        "reflections_per_response": _ratio(c["reflections"], n),
        "multi_sample_rate": _ratio(c["multi"], n),
        "with_samples_rate": _ratio(c["with_samples"], n),
        "verdicts": c["verdicts"],
        "verdict_accuracy": _ratio(c["verdicts_right"], c["verdicts"]),
        "retry_after_incorrect": _ratio(c["retried"], c["incorrect"]),
        "stop_after_correct": _ratio(c["stopped"], c["correct"]),
        "retry_after_incorrect_verdict": _ratio(c["neg_retried"], c["neg_verdict"]),
        "stop_after_correct_verdict": _ratio(c["pos_stopped"], c["pos_verdict"]),
        "inner_accuracy": _ratio(c["inner_right"], c["inner"]),
        "final_accuracy": _ratio(c["finals_right"], c["finals_with"]),
        "any_inner_correct_rate": _ratio(c["any_right"], c["finals_with"]),
        "final_equals_last_inner": _ratio(c["final_is_last"], c["last_answered"]),
    }


def _same(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return False
    return " ".join(a.split()) == " ".join(b.split())


def _ratio(a: float, b: float) -> Optional[float]:
    return round(a / b, 4) if b else None
