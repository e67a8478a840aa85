"""sample: the base model answers every training question under every prompt variant.

    skillfactory stages=[sample]                             # the configured model and task
    skillfactory stages=[sample] sample=tiny sample.n=8      # other settings

For each of the first ``sample.num_questions`` questions of the task's ``train`` split (drawn
with the run ``seed``) and each prompt variant of ``prompts.variants``, the model writes
``sample.n`` completions (chat-rendered, sampled with ``sample.temperature`` / ``top_p``).
The task's verifier grades each one. Rows follow the raw-dataset schema of method.md §3
(``skill_factory.rawdata``), plus metadata: ``task``, ``question_id``, ``question_index``,
``question_fields`` (JSON of the template fields), ``sample_index``, ``seed``, ``model``,
``num_tokens``, ``finish_reason``.

Why sharded: a shard is a fixed slice of ``sample.shard_size`` questions, written atomically
as ``data/train-<shard>-of-<shards>.parquet``, so a killed run resumes at the first missing
shard. Every completion is seeded from (seed, question id, variant, sample index) alone, so
a resumed run, another shard size or another batch size give the same data; that is also
why ``shard_size`` and the model's resource settings are not part of the fingerprint.

Manifest counts: questions, completions, accuracy overall and per variant, answered rate,
questions with a correct / with both a correct and an incorrect completion, tokens
generated and tokens/s.
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from typing import Any

from skill_factory.models import base_model_path, check_model, model_upstream
from skill_factory.pipeline import stage

log = logging.getLogger(__name__)

MAX_VARIANTS = 8
# model settings that change what a model generates (resource settings such as batch size,
# tensor parallelism and GPU memory share do not, and neither does the LLaMA-Factory template;
# the chat template's variables do: they change the prompt text)
MODEL_OUTPUT_KEYS = ("model.name", "model.path", "model.backend", "model.dtype", "model.trust_remote_code",
                     "model.chat_template_kwargs")
# task settings that do not change the training questions: split sizes (a split is a prefix
# of any larger one), the default template (the variants replace it) and the task's own
# seed (training questions are drawn with the run seed, so a seed sweep varies them)
_TASK_EXCLUDED = ("train_size", "val_size", "test_size", "template", "seed")
# sample settings that do not change the data (only how it is cut into files)
SAMPLE_LAYOUT_KEYS = ("shard_size",)


def _task_keys() -> tuple[str, ...]:
    from dataclasses import fields

    from skill_factory.tasks.config import TaskConfig

    return tuple(f"task.{f.name}" for f in fields(TaskConfig) if f.name not in _TASK_EXCLUDED)


def _sample_keys() -> tuple[str, ...]:
    from dataclasses import fields

    from skill_factory.config.schema import SampleConfig

    return tuple(f"sample.{f.name}" for f in fields(SampleConfig) if f.name not in SAMPLE_LAYOUT_KEYS)


CONFIG_KEYS = (*MODEL_OUTPUT_KEYS, *_task_keys(), "prompts.variants", "prompts.system",
               *_sample_keys(), "seed")


def check_prompts(cfg, problems) -> None:
    """Prompt variants: 1-8 of them, each using only the task's placeholders."""
    from skill_factory.errors import SkillFactoryError
    from skill_factory.tasks.base import resolve_name, task_class, template_fields

    variants = cfg.prompts.variants
    if not variants:
        problems.add("prompts.variants", "is empty", "list at least one prompt variant (e.g. original)")
    elif len(variants) > MAX_VARIANTS:
        problems.add("prompts.variants", f"has {len(variants)} variants; the method uses at most {MAX_VARIANTS}",
                     f"keep {MAX_VARIANTS} or fewer")
    name = resolve_name(cfg.task.name) if isinstance(cfg.task.name, str) else None
    allowed = task_class(name).field_names if name is not None else None
    for variant, template in (variants or {}).items():
        key = f"prompts.variants.{variant}"
        try:
            used = template_fields(template)
        except SkillFactoryError as exc:
            problems.add(key, str(exc), "fix the placeholders")
            continue
        if allowed is not None:
            unknown = [u for u in used if u not in allowed]
            if unknown:
                problems.add(key, f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} "
                             f"for task {name}", f"use only {', '.join('{' + a + '}' for a in allowed)}")


def _check(cfg, problems) -> None:
    check_model(cfg, problems)
    check_prompts(cfg, problems)
    s = cfg.sample
    if s.num_questions > cfg.task.train_size:
        problems.add("sample.num_questions",
                     f"{s.num_questions} is more than the task's train split (task.train_size={cfg.task.train_size})",
                     "lower sample.num_questions or raise task.train_size")
    check_generation_lengths(cfg, problems, "sample", s)


def check_generation_lengths(cfg, problems, key: str, section) -> None:
    """A stage's ``max_new_tokens`` must leave room for the prompt; stop strings are non-empty."""
    if section.max_new_tokens >= cfg.model.max_length:
        problems.add(f"{key}.max_new_tokens", f"{section.max_new_tokens} leaves no room for the prompt within "
                     f"model.max_length={cfg.model.max_length}", f"lower {key}.max_new_tokens")
    for i, stop in enumerate(section.stop):
        if not stop:
            problems.add(f"{key}.stop[{i}]", "is an empty string", "remove it")


def sampling_from(section, seed: int, n: int):
    from skill_factory.generation import Sampling

    return Sampling(n=n, temperature=section.temperature, top_p=section.top_p,
                    max_new_tokens=section.max_new_tokens, stop=tuple(section.stop), seed=seed)


def model_id(cfg, inputs) -> str:
    """What the rows' ``model`` column says: the hub id / path, or the built model's origin."""
    if cfg.model.path:
        return cfg.model.path
    if "bootstrap" in inputs:
        return f"{cfg.model.name}@bootstrap:{inputs['bootstrap'].fingerprint}"
    return cfg.model.name


def _schema():
    import pyarrow as pa

    from skill_factory import rawdata as rd

    return pa.schema([
        (rd.QUESTION, pa.string()),
        (rd.ANSWER, pa.string()),
        (rd.PROMPT_VARIANT, pa.string()),
        (rd.COMPLETION, pa.string()),
        (rd.IS_CORRECT, pa.list_(pa.bool_())),
        (rd.EXTRACTED, pa.list_(pa.string())),
        ("task", pa.string()),
        ("question_id", pa.string()),
        ("question_index", pa.int64()),
        ("question_fields", pa.string()),
        ("sample_index", pa.int64()),
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("num_tokens", pa.int64()),
        ("finish_reason", pa.string()),
    ])


class TokenRate:
    """Progress callback: advances the bar and shows generated tokens per second."""

    def __init__(self, bar):
        self.bar = bar
        self.tokens = 0

    def __call__(self, completions: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.advance(completions, info=f"{self.tokens / self.bar.elapsed:,.0f} tok/s")


@stage("sample", config=CONFIG_KEYS, upstream=model_upstream, resumable=True, check=_check)
def sample(ctx) -> dict:
    import pyarrow as pa

    from skill_factory import rawdata as rd
    from skill_factory.generation import chat_messages, derive_seed, make_backend
    from skill_factory.progress import progress
    from skill_factory.tasks.config import get_task

    cfg, s = ctx.cfg, ctx.cfg.sample
    task = get_task(cfg.task)
    questions = task.questions("train", s.num_questions, seed=cfg.seed)
    variants = list(cfg.prompts.variants.items())
    total = (len(questions) + s.shard_size - 1) // s.shard_size
    shards = rd.Shards(ctx.out_dir, total)
    if ctx.resuming:
        shards.remove_stale()
    todo = [i for i in range(total) if not (ctx.resuming and shards.done(i))]
    if len(todo) < total:
        ctx.log.info("sample: %d of %d shards already written; resuming", total - len(todo), total)
    sampling = sampling_from(s, cfg.seed, s.n)
    model = model_id(cfg, ctx.inputs)
    schema = _schema()

    if todo:
        backend = make_backend(cfg.model, base_model_path(cfg, ctx.inputs))
        remaining = sum(len(questions[i * s.shard_size:(i + 1) * s.shard_size]) for i in todo) * len(variants) * s.n
        with backend, progress("sample", total=remaining, unit="completions") as bar:
            rate = TokenRate(bar)
            for index in todo:
                start = time.perf_counter()
                qs = questions[index * s.shard_size:(index + 1) * s.shard_size]
                keys = [(q, v) for q in qs for v, _ in variants]
                prompts = [task.render(q, template) for q in qs for _, template in variants]
                conversations = [chat_messages(p, cfg.prompts.system) for p in prompts]
                seeds = [derive_seed(cfg.seed, "sample", q.id, v) for q, v in keys]
                result = backend.generate(conversations, sampling, seeds=seeds, on_progress=rate)
                rows: dict[str, list] = defaultdict(list)
                for (q, variant), prompt, completions in zip(keys, prompts, result.completions):
                    for j, c in enumerate(completions):
                        extracted, correct = task.grade(c.text, q.gold)
                        rows[rd.QUESTION].append(prompt)
                        rows[rd.ANSWER].append(q.gold)
                        rows[rd.PROMPT_VARIANT].append(variant)
                        rows[rd.COMPLETION].append(c.text)
                        rows[rd.IS_CORRECT].append([bool(correct)])
                        rows[rd.EXTRACTED].append([extracted])
                        rows["task"].append(q.task)
                        rows["question_id"].append(q.id)
                        rows["question_index"].append(q.index)
                        rows["question_fields"].append(json.dumps(dict(q.fields), sort_keys=True))
                        rows["sample_index"].append(j)
                        rows["seed"].append(cfg.seed)
                        rows["model"].append(model)
                        rows["num_tokens"].append(c.num_tokens)
                        rows["finish_reason"].append(c.finish_reason)
                table = pa.table({name: rows[name] for name in schema.names}, schema=schema)
                shards.write(index, table, {"generated_tokens": result.generated_tokens,
                                            "prompt_tokens": result.prompt_tokens,
                                            "generation_seconds": round(result.seconds, 3),
                                            "seconds": round(time.perf_counter() - start, 3)})
    shards.finish()
    return summarize(shards, questions=len(questions), variants=[v for v, _ in variants], model=model)


def summarize(shards, questions: int, variants: list[str], model: str) -> dict[str, Any]:
    """Manifest counts, from the shards on disk (so a resumed run counts every shard)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from skill_factory import rawdata as rd

    table = shards.read(columns=[rd.PROMPT_VARIANT, rd.IS_CORRECT, rd.EXTRACTED, "question_id",
                                 "finish_reason"])
    correct = pc.list_element(table.column(rd.IS_CORRECT), 0)
    flags = pa.table({"variant": table.column(rd.PROMPT_VARIANT), "question": table.column("question_id"),
                      "correct": pc.cast(correct, pa.int64())})
    by_variant = {r["variant"]: (r["correct_sum"], r["correct_count"])
                  for r in flags.group_by("variant").aggregate([("correct", "sum"), ("correct", "count")]).to_pylist()}
    by_question = flags.group_by("question").aggregate([("correct", "min"), ("correct", "max")])
    answered = pc.sum(pc.is_valid(pc.list_element(table.column(rd.EXTRACTED), 0))).as_py() or 0
    truncated = pc.sum(pc.equal(table.column("finish_reason"), "length")).as_py() or 0
    n = table.num_rows
    n_correct = pc.sum(flags.column("correct")).as_py() or 0
    stats = [shards.stats(i) for i in range(shards.total)]
    tokens = sum(st["generated_tokens"] for st in stats)
    gen_seconds = sum(st["generation_seconds"] for st in stats)
    return {
        "questions": questions,
        "variants": variants,
        "completions": n,
        "shards": shards.total,
        "accuracy": _ratio(n_correct, n),
        "accuracy_per_variant": {v: _ratio(*by_variant.get(v, (0, 0))) for v in variants},
        "answered_rate": _ratio(answered, n),
        "truncated_rate": _ratio(truncated, n),
        "questions_with_correct": pc.sum(by_question.column("correct_max")).as_py() or 0,
        "questions_with_correct_and_incorrect": pc.sum(pc.cast(pc.not_equal(
            by_question.column("correct_max"), by_question.column("correct_min")), pa.int64())).as_py() or 0,
        "tokens_generated": tokens,
        "generation_seconds": round(gen_seconds, 3),
        "tokens_per_second": round(tokens / gen_seconds, 1) if gen_seconds > 0 else 0.0,
        "model": model,
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0
