"""Build SkillFactory traces from raw rows: pure, seeded, with an account of every skip.

    from skill_factory.tracebuild import PhrasePools, TraceOptions, build_traces, rows_from_table
    result = build_traces(rows_from_table(table), TraceOptions(formats=("*C_full",), n_samples=5),
                          PhrasePools.from_config(cfg.phrases))
    result.table()      # pyarrow Table: conversations, format, n_samples, question_id, ...
    result.stats        # per-format rows, skips by reason, length statistics

Rows in, rows out: no files, no config objects, no model. The traces stage does the I/O and
the benchmark (``benchmarks/traces_throughput.py``) times this function alone.

What a row is: one completion of one question (under some prompt variant), its verifier
grade and its reflections. A completion is *usable* when at least one of its reflections is
kept (verdict agrees with the verifier, no banned pattern): the reflect stage's
``reflection_kept`` flags when present, else the same filter
(``skill_factory.stages.reflect.judge``) applied here.

Determinism (method.md §4, and the released script's defects we avoid):

- every (question, format, repeat) draws from its own ``random.Random`` seeded by a stable
  hash of (seed, question key, format, repeat): a question's traces do not depend on the
  order of the input, on other questions, on sharding, or on which other formats are built;
- a question's completions are put in a canonical order (by id) before any draw;
- the finished rows are shuffled with a generator seeded by ``seed`` and the shuffled order
  is what is returned and subsampled (the released script discarded its shuffle).

Accounting: a trace that cannot be built is counted under its reason (``no_correct``,
``too_few_usable``, ``too_few_variants``, ``no_incorrect``, ``too_few_correct``) in
``skipped_traces``; a question that yields no row of a format is counted once, under the
first reason met, in ``skipped_questions``. A requested format that yields no row at all is
an ``EmptyTracesError`` naming the counts, never a silently empty dataset.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Iterable, Optional, Sequence

from skill_factory.errors import SkillFactoryError
from skill_factory.tracebuild.layout import LAYOUT_TAGS, render_trace

log = logging.getLogger(__name__)

FORMATS = ("0C", "*C", "*C_full", "*C*IC", "*CC", "random", "no_reflection")
# one trace per n in 1..N (per repeat)
FULL_RANGE = ("*C_full", "random", "no_reflection")
# traces.random_n draws their N in [2, N]
RANDOM_N_FORMATS = ("*C", "*C*IC", "*CC")
# formats that need at least two samples
TWO_OR_MORE = ("*C*IC", "*CC")

NO_CORRECT = "no_correct"
NO_INCORRECT = "no_incorrect"
TOO_FEW_CORRECT = "too_few_correct"
TOO_FEW_USABLE = "too_few_usable"
TOO_FEW_VARIANTS = "too_few_variants"
REASONS = (NO_CORRECT, NO_INCORRECT, TOO_FEW_CORRECT, TOO_FEW_USABLE, TOO_FEW_VARIANTS)

_FIXES = {
    NO_CORRECT: "a question needs a correct completion with a kept reflection: sample more completions "
                "(sample.n, more variants), or check the verifier and the reflections",
    NO_INCORRECT: "*C*IC needs an incorrect completion with a kept reflection per question",
    TOO_FEW_CORRECT: "*CC needs two correct completions with kept reflections per question",
    TOO_FEW_USABLE: "lower traces.n_samples, or sample more completions per question",
    TOO_FEW_VARIANTS: "lower traces.n_samples, or set traces.distinct_variants=false",
}

def _conversations_type():
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


class EmptyTracesError(SkillFactoryError):
    """A requested format (or the whole input) yields no trace."""


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhrasePools:
    """The six phrase pools (see conf/phrases/default.yaml)."""

    generic: tuple[str, ...]
    after_correct: tuple[str, ...]
    after_incorrect: tuple[str, ...]
    ending: tuple[str, ...]
    backtrack: tuple[str, ...]
    confirm: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: Any) -> "PhrasePools":
        """From any object with the six list attributes (e.g. ``cfg.phrases``)."""
        return cls(**{f.name: tuple(getattr(cfg, f.name)) for f in fields(cls)})


def phrase_problems(phrases: Any, formats: Iterable[str], n_samples: int,
                    prefix: str = "phrases") -> list[tuple[str, str, str]]:
    """(key, what, fix) for every phrase-pool problem these formats would hit.

    Shared by config validation and ``build_traces`` so the two cannot disagree.
    """
    out: list[tuple[str, str, str]] = []
    formats = set(formats)
    names = [f.name for f in fields(PhrasePools)]
    for name in names:
        pool = list(getattr(phrases, name))
        seen: set[str] = set()
        for i, phrase in enumerate(pool):
            key = f"{prefix}.{name}[{i}]"
            if not isinstance(phrase, str) or not phrase.strip():
                out.append((key, "is empty", "remove it or write a phrase"))
                continue
            if "\n" in phrase or "\r" in phrase:
                out.append((key, "spans several lines", "write it on one line (a phrase is one line of the trace)"))
            tags = [t for t in LAYOUT_TAGS if t in phrase]
            if tags:
                out.append((key, f"contains the layout tag(s) {', '.join(tags)}", "remove the tag"))
            if phrase in seen:
                out.append((key, f"repeats {phrase!r}", "list each phrase once"))
            seen.add(phrase)
    glue = n_samples >= 2 and bool(formats - {"0C"})

    def empty(name: str) -> bool:
        return not list(getattr(phrases, name))

    if empty("ending"):
        out.append((f"{prefix}.ending", "is empty; every trace ends with an ending phrase", "list some"))
    if "*C*IC" in formats and empty("backtrack"):
        out.append((f"{prefix}.backtrack", "is empty but *C*IC needs it", "list some, or drop *C*IC"))
    if "*CC" in formats and empty("confirm"):
        out.append((f"{prefix}.confirm", "is empty but *CC needs it", "list some, or drop *CC"))
    if glue and "no_reflection" in formats and empty("generic"):
        out.append((f"{prefix}.generic", "is empty but no_reflection glues samples with it only", "list some"))
    if glue and formats - {"0C", "no_reflection"}:
        for name in ("after_correct", "after_incorrect"):
            if empty(name) and empty("generic"):
                what = f"and {prefix}.generic are both empty, so there is no glue phrase for that case"
                out.append((f"{prefix}.{name}", what, f"list some in {prefix}.{name} or {prefix}.generic"))
    return out


@dataclass(frozen=True)
class TraceOptions:
    """What to build (mirrors ``TracesConfig`` plus the run seed)."""

    formats: tuple[str, ...] = ("*C_full",)
    n_samples: int = 5
    repeats: int = 1
    random_n: bool = False
    distinct_variants: bool = False
    variants: Optional[tuple[str, ...]] = None
    subsample: Optional[int] = None
    partial_full: bool = True
    user_variant: Optional[str] = "original"
    seed: int = 0

    @classmethod
    def from_config(cls, traces: Any, seed: int) -> "TraceOptions":
        return cls(formats=tuple(traces.formats), n_samples=traces.n_samples, repeats=traces.repeats,
                   random_n=traces.random_n, distinct_variants=traces.distinct_variants,
                   variants=None if traces.variants is None else tuple(traces.variants),
                   subsample=traces.subsample, partial_full=traces.partial_full,
                   user_variant=traces.user_variant, seed=seed)

    def problems(self) -> list[str]:
        out = []
        unknown = [f for f in self.formats if f not in FORMATS]
        if not self.formats:
            out.append("no format requested")
        if unknown:
            out.append(f"unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
        if len(set(self.formats)) != len(self.formats):
            out.append("a format is listed twice")
        if self.n_samples < 1:
            out.append(f"n_samples must be >= 1, got {self.n_samples}")
        if self.n_samples < 2 and (set(TWO_OR_MORE) & set(self.formats) or self.random_n):
            out.append("*C*IC, *CC and random_n need n_samples >= 2")
        if self.repeats < 1:
            out.append(f"repeats must be >= 1, got {self.repeats}")
        if self.subsample is not None and self.subsample < 1:
            out.append(f"subsample must be >= 1, got {self.subsample}")
        return out


@dataclass
class RawRows:
    """A raw dataset as Python lists, one entry per completion (method.md §3).

    Optional columns: ``extracted_answer`` (else the completion's last <answer> tag),
    ``prompt_variant`` (else one unnamed variant), ``kept`` (reflection_kept flags; else the
    verdict filter runs here), ``question_id`` (else questions are grouped by text) and
    ``completion_id`` (else a content hash).
    """

    question: Sequence[Optional[str]]
    completion: Sequence[Optional[str]]
    is_correct: Sequence[Optional[bool]]
    reflections: Sequence[Optional[Sequence[Optional[str]]]]
    extracted_answer: Optional[Sequence[Optional[str]]] = None
    prompt_variant: Optional[Sequence[Optional[str]]] = None
    kept: Optional[Sequence[Optional[Sequence[Optional[bool]]]]] = None
    question_id: Optional[Sequence[Optional[str]]] = None
    completion_id: Optional[Sequence[Optional[str]]] = None

    def __len__(self) -> int:
        return len(self.question)


def rows_from_table(table) -> RawRows:
    """``RawRows`` from a canonical raw table (``skill_factory.rawdata.canonical_table``).

    Uses the sample stage's ``question_id`` / ``sample_index`` for ids and the reflect
    stage's ``reflection_kept`` flags when the table has them.
    """
    import pyarrow.compute as pc

    from skill_factory import rawdata as rd

    names = set(table.column_names)

    def col(name):
        return table.column(name).to_pylist() if name in names else None

    def first(name):
        if name not in names:
            return None
        return pc.list_element(table.column(name), 0).to_pylist() if table.num_rows else []

    variants = col(rd.PROMPT_VARIANT)
    qids = col("question_id")
    cids = None
    if qids is not None and "sample_index" in names:
        idx = col("sample_index")
        vs = variants if variants is not None else [""] * table.num_rows
        cids = [None if q is None or j is None else f"{q}/{v or ''}/{j}" for q, v, j in zip(qids, vs, idx)]
    return RawRows(
        question=col(rd.QUESTION), completion=col(rd.COMPLETION), is_correct=first(rd.IS_CORRECT),
        reflections=col(rd.REFLECTIONS) or [[] for _ in range(table.num_rows)],
        extracted_answer=first(rd.EXTRACTED), prompt_variant=variants,
        kept=col(rd.REFLECTION_KEPT), completion_id=cids,
        question_id=None if qids is None else [None if q is None else str(q) for q in qids])


# --- per-question state ------------------------------------------------------------------


class _Completion:
    __slots__ = ("cid", "variant", "text", "correct", "answer", "reflections")

    def __init__(self, cid, variant, text, correct, answer, reflections):
        self.cid = cid
        self.variant = variant
        self.text = text
        self.correct = correct
        self.answer = answer
        self.reflections = reflections



# canonical order of a question's completions: by id, ties (duplicate ids) broken by content
_CANONICAL = attrgetter("cid", "variant", "text", "correct", "answer", "reflections")


class _Question:
    __slots__ = ("key", "qid", "text", "usable", "correct", "incorrect", "by_variant", "variants",
                 "correct_variants")

    def __init__(self, key: str, qid: str, text: str, usable: list):
        self.key, self.qid, self.text = key, qid, text
        usable.sort(key=_CANONICAL)
        self.usable = usable
        self.correct = [c for c in usable if c.correct]
        self.incorrect = [c for c in usable if not c.correct]
        by_variant: dict[str, list] = {}
        for c in usable:
            by_variant.setdefault(c.variant, []).append(c)
        self.by_variant = by_variant
        self.variants = sorted(by_variant)
        self.correct_variants = sorted({c.variant for c in self.correct})


def _hash(*parts: object, size: int = 8) -> bytes:
    """A stable digest of ``parts`` (never Python's salted ``hash``)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass"),
                           digest_size=size).digest()


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(int.from_bytes(_hash(seed, "traces", *parts), "big"))


def _final_answer(extracted: Optional[str], text: str) -> str:
    if extracted is not None:
        return str(extracted).strip()
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else ""


def _group(rows: RawRows, opts: TraceOptions, banned) -> tuple[list[_Question], dict]:
    """Usable completions per question, in canonical order, and input counts."""
    n = len(rows)
    allowed = None if opts.variants is None else set(opts.variants)
    judge = None
    if rows.kept is None:
        from skill_factory.stages.reflect import judge
    def optional(column):
        return itertools.repeat(None, n) if column is None else column

    columns = zip(rows.question, optional(rows.question_id), optional(rows.prompt_variant), rows.completion,
                  rows.is_correct, optional(rows.extracted_answer), rows.reflections, optional(rows.kept),
                  optional(rows.completion_id))
    user_variant = opts.user_variant
    texts: dict[str, tuple] = {}  # question key -> best (rank, variant, text) for the user turn
    usable: dict[str, list] = {}
    qids: dict[str, str] = {}
    rows_per_variant: Counter = Counter()
    no_question = outside = n_reflections = n_kept = unusable = n_usable = 0
    for question, qid, variant, text, correct, extracted, reflections, flags, cid in columns:
        if question is None:
            no_question += 1
            continue
        key = question if qid is None else qid
        variant = "" if variant is None else str(variant)
        rank = (variant != user_variant, variant, question)
        best = texts.get(key)
        if best is None or rank < best:
            texts[key] = rank
        if allowed is not None and variant not in allowed:
            outside += 1
            continue
        rows_per_variant[variant] += 1
        if key not in usable:
            usable[key] = []
            qids[key] = _hash(question, size=8).hex() if qid is None else qid
        correct = bool(correct)
        reflections = reflections or ()
        if judge is not None:
            flags = judge([r if isinstance(r, str) else "" for r in reflections], correct, banned)[2]
        kept = tuple([r.strip() for r, k in zip(reflections, flags or ()) if k and isinstance(r, str)])
        n_reflections += len(reflections)
        if not kept:
            unusable += 1
            continue
        n_kept += len(kept)
        text = "" if text is None else str(text)
        if cid is None:
            cid = "h" + _hash(key, variant, text, size=8).hex()
        usable[key].append(_Completion(cid, variant, text.strip(), correct, _final_answer(extracted, text), kept))
        n_usable += 1
    questions = [_Question(k, qids[k], texts[k][2], usable[k]) for k in sorted(usable)]
    stats = {
        "rows": n,
        "rows_used": n - no_question - outside,
        "rows_outside_variants": outside,
        "rows_without_question": no_question,
        "rows_per_variant": dict(sorted(rows_per_variant.items())),
        "questions": len(questions),
        "reflections": n_reflections,
        "kept_reflections": n_kept,
        "usable_completions": n_usable,
        "completions_without_kept_reflection": unusable,
        "questions_with_usable_correct": sum(1 for q in questions if q.correct),
        "questions_with_usable_correct_and_incorrect": sum(1 for q in questions if q.correct and q.incorrect),
        "keep_rule": "reflection_kept flags of the input" if rows.kept is not None
                     else "verdict == verifier" + (", minus banned patterns" if banned is not None else ""),
    }
    return questions, stats


# --- selection -----------------------------------------------------------------------------


def _infeasible(q: _Question, fmt: str, n: int, distinct: bool) -> Optional[str]:
    """Why a trace of ``fmt`` with ``n`` samples cannot be built for ``q`` (None: it can)."""
    if not q.correct:
        return NO_CORRECT
    if fmt == "*C*IC" and not q.incorrect:
        return NO_INCORRECT
    if fmt == "*CC" and len(q.correct) < 2:
        return TOO_FEW_CORRECT
    if len(q.usable) < n:
        return TOO_FEW_USABLE
    if distinct:
        if len(q.variants) < n:
            return TOO_FEW_VARIANTS
        # *C*IC: n >= 2 variants among usable = correct + incorrect already gives a correct
        # and an incorrect completion of different variants
        if fmt == "*CC" and len(q.correct_variants) < 2:
            return TOO_FEW_VARIANTS
    return None


def _others(rng: random.Random, q: _Question, k: int, chosen: tuple, distinct: bool) -> list:
    """``k`` more samples besides ``chosen``; with ``distinct`` one per unused variant."""
    if k <= 0:
        return []
    if distinct:
        used = {c.variant for c in chosen}
        available = [v for v in q.variants if v not in used]
        return [rng.choice(q.by_variant[v]) for v in rng.sample(available, k)]
    if len(chosen) == 1:
        (a,) = chosen
        pool = [c for c in q.usable if c is not a]
    else:
        a, b = chosen
        pool = [c for c in q.usable if c is not a and c is not b]
    return rng.sample(pool, k)


def _select(rng: random.Random, q: _Question, fmt: str, n: int, distinct: bool):
    """(samples in trace order, the sample whose answer is final, backtrack?, confirm?)."""
    if fmt == "*C*IC":
        if distinct:
            candidates = [c for c in q.correct if any(i.variant != c.variant for i in q.incorrect)]
            good = rng.choice(candidates)
            bad = rng.choice([i for i in q.incorrect if i.variant != good.variant])
        else:
            good = rng.choice(q.correct)
            bad = rng.choice(q.incorrect)
        middle = [good] + _others(rng, q, n - 2, (good, bad), distinct)
        rng.shuffle(middle)
        # back to the most recent correct attempt (an "other" may be correct and come later)
        target = next(c for c in reversed(middle) if c.correct)
        return middle + [bad], target, True, False
    if fmt == "*CC":
        if distinct:
            pair = tuple(rng.choice([c for c in q.correct if c.variant == v])
                         for v in rng.sample(q.correct_variants, 2))
        else:
            pair = tuple(rng.sample(q.correct, 2))
        return _others(rng, q, n - 2, pair, distinct) + list(pair), pair[1], False, True
    last = rng.choice(q.usable if fmt == "random" else q.correct)
    return _others(rng, q, n - 1, (last,), distinct) + [last], last, False, False


def _trace(rng: random.Random, q: _Question, fmt: str, n: int, distinct: bool, phrases: PhrasePools,
           glue_correct: tuple, glue_incorrect: tuple) -> tuple[list, str]:
    """One trace: its samples and its assistant text (draws in a fixed order from ``rng``)."""
    samples, final, backtrack, confirm = _select(rng, q, fmt, n, distinct)
    no_reflection = fmt == "no_reflection"
    reflections = None if no_reflection else [rng.choice(c.reflections) for c in samples]
    glues = [rng.choice(phrases.generic if no_reflection else glue_correct if c.correct else glue_incorrect)
             for c in samples[:-1]]
    tail = rng.choice(phrases.ending)
    if backtrack:
        tail = f"{rng.choice(phrases.backtrack)}\n{final.text}\n{tail}"
    elif confirm:
        tail = f"{rng.choice(phrases.confirm)}\n{tail}"
    return samples, render_trace([c.text for c in samples], reflections, glues, tail, final.answer)


# --- the builder ---------------------------------------------------------------------------


@dataclass
class TraceResult:
    """Built rows (already shuffled and subsampled) and their statistics."""

    question_id: list[str] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    assistant: list[str] = field(default_factory=list)
    format: list[str] = field(default_factory=list)
    n_samples: list[int] = field(default_factory=list)
    completion_ids: list[list[str]] = field(default_factory=list)
    sample_correct: list[list[bool]] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.assistant)

    def records(self) -> list[dict]:
        """Rows as dicts (ShareGPT ``conversations`` plus the metadata columns)."""
        return [{"conversations": [{"role": "user", "content": u}, {"role": "assistant", "content": a}],
                 "format": f, "n_samples": n, "question_id": q, "completion_ids": c, "sample_correct": s}
                for u, a, f, n, q, c, s in zip(self.user, self.assistant, self.format, self.n_samples,
                                               self.question_id, self.completion_ids, self.sample_correct)]

    def table(self, chunk_rows: int = 16384):
        """A pyarrow Table; ``conversations`` is list<struct<role, content>> (ShareGPT).

        Built in chunks so no single string buffer passes arrow's 2 GiB limit.
        """
        import pyarrow as pa

        chunks = []
        for lo in range(0, len(self), chunk_rows):
            users, assistants = self.user[lo:lo + chunk_rows], self.assistant[lo:lo + chunk_rows]
            n = len(users)
            roles = pa.array(["user", "assistant"] * n, pa.string())
            contents = pa.array([t for pair in zip(users, assistants) for t in pair], pa.string())
            messages = pa.StructArray.from_arrays([roles, contents], names=["role", "content"])
            chunks.append(pa.ListArray.from_arrays(pa.array(range(0, 2 * n + 1, 2), pa.int32()), messages))
        conversations = pa.chunked_array(chunks, _conversations_type())
        return pa.table({
            "conversations": conversations,
            "format": pa.array(self.format, pa.string()),
            "n_samples": pa.array(self.n_samples, pa.int64()),
            "question_id": pa.array(self.question_id, pa.string()),
            "completion_ids": pa.array(self.completion_ids, pa.list_(pa.string())),
            "sample_correct": pa.array(self.sample_correct, pa.list_(pa.bool_())),
        })


def _length_stats(values: Sequence[int]) -> dict:
    if not values:
        return {"count": 0}
    s = sorted(values)
    n = len(s)

    def pct(p: float) -> int:
        return s[min(n - 1, int(p * n))]

    return {"count": n, "mean": round(sum(s) / n, 1), "min": s[0], "p50": pct(0.5), "p90": pct(0.9),
            "p99": pct(0.99), "max": s[-1]}


def length_stats(lengths: Sequence[int], formats: Sequence[str], order: Sequence[str] = FORMATS) -> dict:
    """Length statistics overall and per format (used for chars here, tokens by the stage)."""
    per: dict[str, list[int]] = {}
    for length, fmt in zip(lengths, formats):
        per.setdefault(fmt, []).append(length)
    return {"all": _length_stats(lengths), **{f: _length_stats(per[f]) for f in order if f in per}}


def build_traces(rows: RawRows, options: TraceOptions, phrases: PhrasePools, banned: Optional[re.Pattern] = None,
                 ) -> TraceResult:
    """Every requested trace of every question, shuffled with the seed (see the module doc)."""
    problems = options.problems() + [f"{k}: {w}" for k, w, _ in phrase_problems(phrases, options.formats,
                                                                                 options.n_samples)]
    lengths = {f.name: len(getattr(rows, f.name)) for f in fields(RawRows) if getattr(rows, f.name) is not None}
    if len(set(lengths.values())) > 1:
        problems.append(f"the raw columns differ in length ({lengths})")
    if problems:
        raise SkillFactoryError("cannot build traces: " + "; ".join(problems))
    questions, input_stats = _group(rows, options, banned)
    if not questions:
        raise EmptyTracesError(
            f"traces: the input has no usable rows ({input_stats['rows']} rows, "
            f"{input_stats['rows_outside_variants']} outside traces.variants, "
            f"{input_stats['rows_without_question']} without a question); nothing to build")

    glue_correct = phrases.after_correct + phrases.generic
    glue_incorrect = phrases.after_incorrect + phrases.generic
    N, distinct = options.n_samples, options.distinct_variants
    built = TraceResult()
    per_format = {}
    for fmt in options.formats:
        per_format[fmt] = {"rows": 0, "questions": 0, "rows_by_n": Counter(),
                           "skipped_questions": Counter(), "skipped_traces": Counter()}
    for q in questions:
        for fmt in options.formats:
            acc = per_format[fmt]
            made, first_reason = 0, None
            for repeat in range(options.repeats):
                rng = _rng(options.seed, q.key, fmt, repeat)
                if fmt in FULL_RANGE:
                    ns = range(1, N + 1)
                    if not options.partial_full:
                        reason = _infeasible(q, fmt, N, distinct)
                        if reason is not None:
                            acc["skipped_traces"][reason] += N
                            first_reason = first_reason or reason
                            continue
                elif fmt == "0C":
                    ns = (1,)
                else:
                    ns = (rng.randint(2, N) if options.random_n else N,)
                for n in ns:
                    reason = _infeasible(q, fmt, n, distinct)
                    if reason is not None:
                        acc["skipped_traces"][reason] += 1
                        first_reason = first_reason or reason
                        continue
                    samples, text = _trace(rng, q, fmt, n, distinct, phrases, glue_correct, glue_incorrect)
                    built.assistant.append(text)
                    built.user.append(q.text)
                    built.question_id.append(q.qid)
                    built.format.append(fmt)
                    built.n_samples.append(n)
                    built.completion_ids.append([c.cid for c in samples])
                    built.sample_correct.append([c.correct for c in samples])
                    acc["rows_by_n"][n] += 1
                    made += 1
            acc["rows"] += made
            if made:
                acc["questions"] += 1
            else:
                acc["skipped_questions"][first_reason] += 1

    empty = [fmt for fmt in options.formats if per_format[fmt]["rows"] == 0]
    if empty:
        lines = []
        for fmt in empty:
            skipped = sorted(per_format[fmt]["skipped_questions"].items(),
                             key=lambda rc: (-rc[1], REASONS.index(rc[0])))
            listing = ", ".join(f"{r}={c}" for r, c in skipped)
            fixes = "; ".join(_FIXES[r] for r, _ in skipped)
            lines.append(f"format {fmt} yields no trace from {len(questions)} question(s) "
                         f"(skipped: {listing}); fix: {fixes}")
        raise EmptyTracesError("traces: " + "\n  ".join(lines))

    total = len(built)
    order = list(range(total))
    random.Random(int.from_bytes(_hash(options.seed, "traces-shuffle"), "big")).shuffle(order)
    if options.subsample is not None and options.subsample < total:
        order = order[:options.subsample]
    elif options.subsample is not None:
        log.warning("traces.subsample=%d is not below the %d rows built; keeping all", options.subsample, total)
    result = TraceResult(*([column[i] for i in order] for column in (
        built.question_id, built.user, built.assistant, built.format, built.n_samples, built.completion_ids,
        built.sample_correct)))
    written = Counter(result.format)
    format_stats = {}
    for fmt, acc in per_format.items():
        format_stats[fmt] = {
            "rows": acc["rows"], "rows_written": written.get(fmt, 0), "questions": acc["questions"],
            "rows_by_n": {str(n): c for n, c in sorted(acc["rows_by_n"].items())},
            "skipped_questions": {r: acc["skipped_questions"][r] for r in REASONS if acc["skipped_questions"][r]},
            "skipped_traces": {r: acc["skipped_traces"][r] for r in REASONS if acc["skipped_traces"][r]},
        }
    result.stats = {
        "input": input_stats,
        "formats": format_stats,
        "rows_built": total,
        "rows": len(result),
        "chars": length_stats([len(t) for t in result.assistant], result.format, options.formats),
    }
    return result
