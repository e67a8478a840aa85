"""Answer a suite with a generation backend, grade every response, aggregate into results.

    records = answer(backend, entry, decoding, max_new_tokens=4096, seed=0)
    forced = answer_forced(backend, entry, decoding, budget=512, settings=..., seed=0)
    results = aggregate(entries, skipped, {("countdown_3", "greedy"): records}, {...}, ks=[1, 4])

Every response becomes one JSON-able record: the entry, decoding, question id, sample index,
text, the final answer the task's verifier extracted and its grade, token count, finish
reason and the skill-usage events of the text (``skills.skill_usage``). Records are what the
eval stage keeps on disk (``responses/*.jsonl``), so any metric can be recomputed later
without generating again.

Seeding: the completion of sample ``j`` of question ``q`` depends only on (run seed, entry,
decoding, question id, ``j``), never on batching, like the sample stage.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional, Sequence

from skill_factory.evaluation.budget import ForcingSettings, TokenizerTokens, Tokens, budget_force
from skill_factory.evaluation.metrics import mean_stderr, summarize_task
from skill_factory.evaluation.skills import skill_usage, summarize_skills
from skill_factory.evaluation.suite import Decoding, SuiteEntry
from skill_factory.generation import Sampling, chat_messages, derive_seed

log = logging.getLogger(__name__)

Progress = Optional[Callable[[int, int], None]]


def conversations(entry: SuiteEntry) -> list[list[dict]]:
    return [chat_messages(entry.prompt(q), entry.system) for q in entry.questions]


def graded_record(entry: SuiteEntry, question: Any, decoding: str, sample: int, text: str,
                  num_tokens: int, finish_reason: str) -> dict:
    """One response, graded by the task's verifier, with its skill-usage events."""
    extracted, correct = entry.task.grade(text, question.gold)
    return {
        "entry": entry.key,
        "task": entry.task_name,
        "decoding": decoding,
        "question_id": question.id,
        "question_index": question.index,
        "sample": sample,
        "gold": question.gold,
        "text": text,
        "extracted": extracted,
        "correct": bool(correct),
        "num_tokens": int(num_tokens),
        "finish_reason": finish_reason,
        "skills": skill_usage(text, lambda s, g=question.gold: entry.task.grade(s, g)),
    }


def answer(backend: Any, entry: SuiteEntry, decoding: Decoding, *, max_new_tokens: int, seed: int,
           on_progress: Progress = None) -> list[dict]:
    """``decoding.n`` responses per question of ``entry``, graded."""
    sampling = Sampling(n=decoding.n, temperature=decoding.temperature, top_p=decoding.top_p,
                        max_new_tokens=max_new_tokens, seed=seed)
    seeds = [derive_seed(seed, "eval", entry.key, decoding.name, q.id) for q in entry.questions]
    result = backend.generate(conversations(entry), sampling, seeds=seeds, on_progress=on_progress)
    out = []
    for q, completions in zip(entry.questions, result.completions):
        for j, c in enumerate(completions):
            out.append(graded_record(entry, q, decoding.name, j, c.text, c.num_tokens, c.finish_reason))
    return out


def token_counter(backend: Any) -> Tokens:
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        raise TypeError(f"{type(backend).__name__} has no tokenizer; budget forcing needs one to count tokens")
    return TokenizerTokens(tokenizer)


def answer_forced(backend: Any, entry: SuiteEntry, decoding: Decoding, *, budget: int,
                  settings: ForcingSettings, seed: int, tokens: Optional[Tokens] = None,
                  on_progress: Progress = None) -> list[dict]:
    """Budget-forced responses (``decoding.n`` per question) of ``entry``, graded."""
    convs, seeds, keys = [], [], []
    for q, conv in zip(entry.questions, conversations(entry)):
        for j in range(decoding.n):
            convs.append(conv)
            seeds.append(derive_seed(seed, "eval-budget", entry.key, decoding.name, q.id, j))
            keys.append((q, j))
    forced = budget_force(backend, convs, seeds, budget=budget, temperature=decoding.temperature,
                          top_p=decoding.top_p, settings=settings,
                          tokens=tokens if tokens is not None else token_counter(backend),
                          has_answer=lambda text: entry.task.extract(text) is not None,
                          on_progress=on_progress)
    out = []
    for (q, j), f in zip(keys, forced):
        rec = graded_record(entry, q, decoding.name, j, f.text, f.tokens, f.reason)
        rec.update(budget=budget, thinking_tokens=f.thinking_tokens, rounds=f.rounds, forced=f.forced,
                   unclosed=f.unclosed, cuts=f.cuts)
        out.append(rec)
    return out


def summarize_budget(records: Sequence[Mapping[str, Any]]) -> dict:
    """One point of an accuracy-vs-budget curve."""
    base = summarize_task(records, n=max((r["sample"] for r in records), default=0) + 1, ks=[])
    m = len(records) or 1
    return {
        "accuracy": base["accuracy"],
        "stderr": base["stderr"],
        "questions": base["questions"],
        "responses": base["responses"],
        "format_rate": base["format_rate"],
        "mean_tokens": base["mean_tokens"],
        "mean_thinking_tokens": round(sum(r["thinking_tokens"] for r in records) / m, 2),
        "mean_rounds": round(sum(r["rounds"] for r in records) / m, 3),
        "forced_rate": round(sum(bool(r["forced"]) for r in records) / m, 4),
        "unclosed_rate": round(sum(bool(r["unclosed"]) for r in records) / m, 4),
    }


def _skills(records: Sequence[Mapping[str, Any]]) -> dict:
    return summarize_skills([r["skills"] for r in records], [(r["extracted"], r["correct"]) for r in records])


def aggregate(entries: Sequence[SuiteEntry], skipped: Mapping[str, str],
              responses: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
              forced: Mapping[tuple[str, int], Sequence[Mapping[str, Any]]],
              decodings: Sequence[Decoding], ks: Sequence[int], budget_decoding: Optional[str] = None) -> dict:
    """The metrics of a run (without run metadata): per entry and decoding, skill usage, the
    budget-forcing curves, and pooled views used by the comparison report."""
    tasks: dict[str, Any] = {}
    for e in entries:
        per: dict[str, Any] = {}
        for d in decodings:
            recs = responses.get((e.key, d.name))
            if recs is None:
                continue
            summary = summarize_task(recs, d.n, ks)
            summary["temperature"] = d.temperature
            summary["skills"] = _skills(recs)
            per[d.name] = summary
        tasks[e.key] = {"task": e.task_name, "params": _plain(e.params), "size": e.size, "decodings": per}
    overall: dict[str, Any] = {}
    for d in decodings:
        recs = [r for e in entries for r in responses.get((e.key, d.name), ())]
        if recs:
            # macro average over entries (each entry weighs the same, as in the paper's tables)
            accs = [tasks[e.key]["decodings"][d.name]["accuracy"] for e in entries if d.name in tasks[e.key]["decodings"]]
            overall[d.name] = {"mean_accuracy": round(sum(accs) / len(accs), 4), "skills": _skills(recs),
                               "mean_tokens": round(sum(r["num_tokens"] for r in recs) / len(recs), 2)}
    budget: dict[str, Any] = {}
    by_budget: dict[int, list] = {}
    for (key, b), recs in sorted(forced.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        budget.setdefault(key, {"decoding": budget_decoding, "points": []})
        point = {"budget": b, **summarize_budget(recs)}
        budget[key]["points"].append(point)
        by_budget.setdefault(b, []).append(point)
    pooled = []
    for b in sorted(by_budget):
        pts = by_budget[b]
        acc, _ = mean_stderr([p["accuracy"] for p in pts])
        pooled.append({"budget": b, "accuracy": round(acc, 4),
                       "mean_tokens": round(sum(p["mean_tokens"] for p in pts) / len(pts), 2)})
    return {"tasks": tasks, "skipped": dict(skipped), "overall": overall,
            "budget_forcing": {"entries": budget, "pooled": pooled, "decoding": budget_decoding}}


def _plain(d: Mapping[str, Any]) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in d.items()}


def flatten_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics as flat ``eval/...`` keys (for W&B)."""
    out: dict[str, float] = {}
    for key, t in results.get("tasks", {}).items():
        for dec, s in t["decodings"].items():
            for name in ("accuracy", "stderr", "format_rate", "mean_tokens"):
                out[f"eval/{key}/{dec}/{name}"] = s[name]
            for k, v in s["pass_at_k"].items():
                out[f"eval/{key}/{dec}/pass@{k}"] = v
            for name, v in s["skills"].items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"eval/{key}/{dec}/skills/{name}"] = v
    for dec, o in results.get("overall", {}).items():
        out[f"eval/overall/{dec}/mean_accuracy"] = o["mean_accuracy"]
    for key, b in results.get("budget_forcing", {}).get("entries", {}).items():
        for p in b["points"]:
            out[f"eval/budget/{key}/B{p['budget']}/accuracy"] = p["accuracy"]
            out[f"eval/budget/{key}/B{p['budget']}/mean_tokens"] = p["mean_tokens"]
    return out

