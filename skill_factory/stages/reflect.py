"""reflect: the model judges each of its completions K times; judgements are filtered.

    skillfactory stages=[reflect]                                   # on this run's samples
    skillfactory stages=[reflect] reflect.input_dataset=path/or/hub-id \\
        reflect.columns.completion=my_column                       # on a published raw dataset

For every row of the raw dataset (one completion) the model gets ``prompts.reflection``
with ``{question}`` = the row's user prompt and ``{response}`` = the completion, and writes
``reflect.k`` reflections. Each reflection's verdict is its first ``<verdict>`` tag
(case-insensitive, trimmed; anything but Correct / Incorrect is no verdict). A reflection is
*kept* when its verdict equals the verifier's grade of the completion (the row's
``..._eval_is_correct``) and it matches none of ``reflect.banned_patterns`` (whole words,
case-insensitive; none by default).

Rows keep every column of the input plus, per reflection, the text
(``model_responses__mutated_prompts_reflection``), the parsed verdict
(``reflection_verdicts``: true / false / null), whether a banned pattern matched
(``reflection_banned``) and whether it is kept (``reflection_kept``), and the row's
``num_kept_reflections``. Nothing is dropped here, so the filter can be audited; the traces
stage uses only kept reflections and skips completions with none (method.md §3).

Input: the sample stage's artifact, or ``reflect.input_dataset`` (then the sample stage is
not run). A published dataset's columns are found by ``reflect.columns`` (or the paper's
names and their alternatives) and checked before any generation; a missing or mistyped
column is one error naming it.

Sharding and seeding as in the sample stage: a shard is ``reflect.shard_size`` rows, and
row ``i``'s reflections are seeded from (seed, i) alone.

Manifest counts: rows, reflections, verdict rate and accuracy (overall, on correct and on
incorrect completions), kept reflections and rate, rows with a kept reflection, banned
reflections, the input's accuracy per variant, tokens generated and tokens/s.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Optional, Sequence

from skill_factory.models import base_model_path, check_model, model_upstream
from skill_factory.pipeline import stage
from skill_factory.stages.sample import MODEL_OUTPUT_KEYS, TokenRate, check_generation_lengths, sampling_from

log = logging.getLogger(__name__)

REFLECTION_FIELDS = ("question", "response")
# reflect settings that do not change the data (only how it is cut into files)
REFLECT_LAYOUT_KEYS = ("shard_size",)


def _reflect_keys() -> tuple[str, ...]:
    from dataclasses import fields

    from skill_factory.config.schema import ReflectConfig

    return tuple(f"reflect.{f.name}" for f in fields(ReflectConfig) if f.name not in REFLECT_LAYOUT_KEYS)


CONFIG_KEYS = (*MODEL_OUTPUT_KEYS, "prompts.reflection", "prompts.system", *_reflect_keys(),
               "reflect.input_identity", "seed")


def _upstream(cfg) -> tuple[str, ...]:
    own = () if cfg.reflect.input_dataset else ("sample",)
    return (*model_upstream(cfg), *own)


def compile_banned(patterns: Sequence[str]) -> Optional[re.Pattern]:
    """One regex matching any pattern as a whole word, case-insensitively (None if none)."""
    if not patterns:
        return None
    return re.compile("|".join(rf"\b(?:{p})\b" for p in patterns), re.IGNORECASE)


def judge(reflections: Sequence[str], correct: bool, banned: Optional[re.Pattern]):
    """Per reflection: (parsed verdict, matched a banned pattern, kept).

    Kept = the verdict equals the verifier's grade and no banned pattern matched. A
    reflection without a verdict is never kept. Shared with the traces stage, which applies
    the same filter to published datasets that carry reflections but no flags.
    """
    from skill_factory.verdicts import parse_verdict

    verdicts = [parse_verdict(r) for r in reflections]
    hits = [bool(banned is not None and banned.search(r)) for r in reflections]
    kept = [v is not None and v == bool(correct) and not b for v, b in zip(verdicts, hits)]
    return verdicts, hits, kept


def _check(cfg, problems) -> None:
    from skill_factory import rawdata
    from skill_factory.errors import SkillFactoryError
    from skill_factory.tasks.base import template_fields

    check_model(cfg, problems)
    r = cfg.reflect
    try:
        used = template_fields(cfg.prompts.reflection)
    except SkillFactoryError as exc:
        problems.add("prompts.reflection", str(exc), "fix the placeholders")
    else:
        unknown = [u for u in used if u not in REFLECTION_FIELDS]
        if unknown:
            problems.add("prompts.reflection", f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}",
                         "use only {question} and {response}")
        if "response" not in used:
            problems.add("prompts.reflection", "does not show the response ({response})",
                         "include {response} (and usually {question})")
    check_generation_lengths(cfg, problems, "reflect", r)
    if r.input_dataset is not None:
        if not r.input_dataset.strip():
            problems.add("reflect.input_dataset", "is empty", "use null (the sample stage) or a path / hub id")
        elif rawdata.is_local_source(r.input_dataset):
            from pathlib import Path

            if not Path(r.input_dataset).expanduser().exists():
                problems.add("reflect.input_dataset", f"no such file or folder: {r.input_dataset}",
                             "point it at a parquet / jsonl / json file or folder, or a hub id")


def _load_input(ctx):
    """The input rows as a canonical pyarrow Table, and a description of where they came from."""
    from skill_factory import rawdata as rd

    r = ctx.cfg.reflect
    if r.input_dataset:
        source = r.input_dataset
        ds = rd.load_raw_dataset(source, split=r.input_split, revision=r.input_revision,
                                 key="reflect.input_dataset")
        columns = r.columns
    else:
        source = str(ctx.inputs["sample"].path)
        ds = rd.load_artifact(source)
        columns = rd.RawColumns()
    table = rd.canonical_table(rd.arrow_table(ds), columns, required=("question", "completion", "is_correct"),
                               optional=("answer", "prompt_variant", "extracted_answer"),
                               key="reflect.columns", source=source)
    replaced = [c for c in (rd.REFLECTIONS, rd.REFLECTION_VERDICTS, rd.REFLECTION_BANNED,
                            rd.REFLECTION_KEPT, rd.NUM_KEPT) if c in table.column_names]
    if replaced:
        log.warning("reflect: the input already has %s; they are replaced by new reflections",
                    ", ".join(replaced))
        table = table.drop_columns(replaced)
    return table, source


@stage("reflect", config=CONFIG_KEYS, upstream=_upstream, resumable=True, check=_check)
def reflect(ctx) -> dict:
    from skill_factory import rawdata as rd
    from skill_factory.generation import chat_messages, derive_seed, make_backend
    from skill_factory.progress import progress
    from skill_factory.tasks.base import render_template

    cfg, r = ctx.cfg, ctx.cfg.reflect
    table, source = _load_input(ctx)
    rows = table.num_rows
    if rows == 0:
        ctx.log.warning("reflect: the input %s has no rows; the dataset will be empty", source)
    total = max(1, (rows + r.shard_size - 1) // r.shard_size)
    shards = rd.Shards(ctx.out_dir, total)
    if ctx.resuming:
        shards.remove_stale()
    todo = [i for i in range(total) if not (ctx.resuming and shards.done(i))]
    if len(todo) < total:
        ctx.log.info("reflect: %d of %d shards already written; resuming", total - len(todo), total)
    banned = compile_banned(r.banned_patterns)
    sampling = sampling_from(r, cfg.seed, r.k)

    if todo and rows:
        backend = make_backend(cfg.model, base_model_path(cfg, ctx.inputs))
        remaining = sum(min(rows, (i + 1) * r.shard_size) - i * r.shard_size for i in todo) * r.k
        with backend, progress("reflect", total=remaining, unit="reflections") as bar:
            rate = TokenRate(bar)
            for index in todo:
                start = time.perf_counter()
                lo, hi = index * r.shard_size, min(rows, (index + 1) * r.shard_size)
                part = table.slice(lo, hi - lo)
                questions = part.column(rd.QUESTION).to_pylist()
                responses = part.column(rd.COMPLETION).to_pylist()
                correct = [v[0] for v in part.column(rd.IS_CORRECT).to_pylist()]
                conversations = [
                    chat_messages(render_template(cfg.prompts.reflection, {"question": q, "response": c},
                                                  task="reflection"), cfg.prompts.system)
                    for q, c in zip(questions, responses)]
                seeds = [derive_seed(cfg.seed, "reflect", lo + i) for i in range(hi - lo)]
                result = backend.generate(conversations, sampling, seeds=seeds, on_progress=rate)
                texts, verdicts, hits, kept = [], [], [], []
                for completions, ok in zip(result.completions, correct):
                    t = [c.text for c in completions]
                    v, b, k = judge(t, ok, banned)
                    texts.append(t)
                    verdicts.append(v)
                    hits.append(b)
                    kept.append(k)
                shards.write(index, with_reflections(part, texts, verdicts, hits, kept), {"generated_tokens": result.generated_tokens,
                                          "prompt_tokens": result.prompt_tokens,
                                          "generation_seconds": round(result.seconds, 3),
                                          "seconds": round(time.perf_counter() - start, 3)})
    if not rows and not shards.done(0):  # one empty shard keeps the dataset loadable
        shards.write(0, with_reflections(table, [], [], [], []),
                     {"generated_tokens": 0, "prompt_tokens": 0, "generation_seconds": 0.0, "seconds": 0.0})
    shards.finish()
    counts = summarize(shards)
    counts["input"] = source
    return counts


def with_reflections(part, texts, verdicts, banned, kept):
    """``part`` (input rows) plus the per-reflection columns and the kept count."""
    import pyarrow as pa

    from skill_factory import rawdata as rd

    strings, bools = pa.list_(pa.string()), pa.list_(pa.bool_())
    return (part.append_column(rd.REFLECTIONS, pa.array(texts, strings))
            .append_column(rd.REFLECTION_VERDICTS, pa.array(verdicts, bools))
            .append_column(rd.REFLECTION_BANNED, pa.array(banned, bools))
            .append_column(rd.REFLECTION_KEPT, pa.array(kept, bools))
            .append_column(rd.NUM_KEPT, pa.array([sum(k) for k in kept], pa.int64())))


def summarize(shards) -> dict[str, Any]:
    """Manifest counts, from the shards on disk (so a resumed run counts every shard)."""
    from skill_factory import rawdata as rd

    table = shards.read()
    correct = [v[0] for v in table.column(rd.IS_CORRECT).to_pylist()]
    verdicts = table.column(rd.REFLECTION_VERDICTS).to_pylist()
    kept = table.column(rd.REFLECTION_KEPT).to_pylist()
    banned = table.column(rd.REFLECTION_BANNED).to_pylist()
    total = sum(len(v) for v in verdicts)
    parsed = sum(x is not None for v in verdicts for x in v)
    agree = {True: [0, 0], False: [0, 0]}
    for ok, vs in zip(correct, verdicts):
        agree[ok][0] += sum(x == ok for x in vs if x is not None)
        agree[ok][1] += len(vs)
    kept_total = sum(sum(k) for k in kept)
    stats = [shards.stats(i) for i in range(shards.total)]
    tokens = sum(st["generated_tokens"] for st in stats)
    gen_seconds = sum(st["generation_seconds"] for st in stats)
    counts: dict[str, Any] = {
        "rows": table.num_rows,
        "shards": shards.total,
        "input_accuracy": _ratio(sum(correct), len(correct)),
        "reflections": total,
        "verdict_rate": _ratio(parsed, total),
        "verdict_accuracy": _ratio(agree[True][0] + agree[False][0], total),
        "verdict_accuracy_on_correct": _ratio(*agree[True]),
        "verdict_accuracy_on_incorrect": _ratio(*agree[False]),
        "kept_reflections": kept_total,
        "kept_rate": _ratio(kept_total, total),
        "rows_with_kept": sum(any(k) for k in kept),
        "banned_reflections": sum(sum(b) for b in banned),
        "tokens_generated": tokens,
        "generation_seconds": round(gen_seconds, 3),
        "tokens_per_second": round(tokens / gen_seconds, 1) if gen_seconds > 0 else 0.0,
    }
    if rd.PROMPT_VARIANT in table.column_names:
        per: dict[str, list[int]] = {}
        for v, ok in zip(table.column(rd.PROMPT_VARIANT).to_pylist(), correct):
            acc = per.setdefault(str(v), [0, 0])
            acc[0] += ok
            acc[1] += 1
        counts["input_accuracy_per_variant"] = {v: _ratio(*a) for v, a in per.items()}
    return counts


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0
