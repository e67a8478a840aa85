"""RL prompts as verl parquet files: ``data/train.parquet`` and ``data/val.parquet``.

One row per question, in the layout verl's ``RLHFDataset`` and reward loop expect::

    data_source   "countdown"                     routes the row to the task's verifier
    prompt        [{role: system?}, {role: user}] the chat verl renders with the model's template
    ability       "math"
    reward_model  {style: "rule", ground_truth: Question.gold}
    extra_info    {split, index, question_id, task, prompt_variant, seed, fields, task_params}

Why the prompt is a chat list built by ``chat_messages``: verl (and TRL) render it with the
model's own chat template and ``add_generation_prompt=True``, which is exactly how the sample
and eval stages render their prompts, so the policy is trained on the prompts it was sampled
and is evaluated with. ``fields`` holds the question's template values (Countdown: numbers and
target, as strings) and ``task_params`` the task generator's parameters as JSON, so a row is
self-describing without fixing a parquet schema per task.

The question sets are deterministic: the train rows are questions ``[offset, offset + size)``
of the task's train split drawn with the run seed (the same draw as the sample stage, whose
questions are the first ``sample.num_questions``), the val rows the first ``val_size``
questions of the val split; the same config writes byte-identical files.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from skill_factory.errors import SkillFactoryError

log = logging.getLogger(__name__)

DATA_DIR = "data"
TRAIN_FILE = f"{DATA_DIR}/train.parquet"
VAL_FILE = f"{DATA_DIR}/val.parquet"
COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")
# verl's ``ability`` column (informational: verl groups nothing by it)
ABILITY = {"countdown": "math", "longmult": "math", "gsm8k": "math", "letter_countdown": "wordplay",
           "acronym": "wordplay", "csqa": "commonsense"}


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """Which questions the RL data holds (sizes already resolved against the task config)."""

    train_offset: int
    train_size: int
    val_size: int
    prompt_variant: str
    seed: int


def plan(cfg) -> DataPlan:
    """``rl.data`` with its null sizes taken from the task config."""
    d, t = cfg.rl.data, cfg.task
    size = d.train_size if d.train_size is not None else max(t.train_size - d.train_offset, 0)
    val = d.val_size if d.val_size is not None else t.val_size
    return DataPlan(d.train_offset, size, val, d.prompt_variant, cfg.seed)


def rows_for(task, questions: Sequence, template: str, system: Optional[str], variant: str,
             seed: int) -> list[dict]:
    """verl rows for ``questions``, the prompt rendered from ``template`` as a chat."""
    from skill_factory.generation import chat_messages

    params = json.dumps(dataclasses.asdict(task.params), sort_keys=True)
    ability = ABILITY.get(task.name, "reasoning")
    rows = []
    for q in questions:
        rows.append({
            "data_source": q.task,
            "prompt": chat_messages(task.render(q, template), system),
            "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": q.gold},
            "extra_info": {"split": q.split, "index": int(q.index), "question_id": q.id, "task": q.task,
                           "prompt_variant": variant, "seed": int(seed),
                           "fields": {k: str(v) for k, v in sorted(q.fields.items())},
                           "task_params": params},
        })
    return rows


def _schema(field_names: Sequence[str]):
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([
            ("split", pa.string()), ("index", pa.int64()), ("question_id", pa.string()), ("task", pa.string()),
            ("prompt_variant", pa.string()), ("seed", pa.int64()),
            ("fields", pa.struct([(name, pa.string()) for name in field_names])),
            ("task_params", pa.string())])),
    ])


def write_parquet(rows: list[dict], path: Path) -> None:
    """Write rows atomically (a temporary file renamed into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise SkillFactoryError(f"rl.data: no questions for {path.name}")
    names = sorted(rows[0]["extra_info"]["fields"])
    table = pa.Table.from_pylist(rows, schema=_schema(names))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def write_rl_data(cfg, out_dir: Path) -> dict[str, Any]:
    """Write ``data/train.parquet`` and ``data/val.parquet`` under ``out_dir``; return statistics."""
    from skill_factory.tasks.config import get_task

    p = plan(cfg)
    variants = cfg.prompts.variants or {}
    if p.prompt_variant not in variants:
        raise SkillFactoryError(f"rl.data.prompt_variant: '{p.prompt_variant}' is not one of "
                                f"{', '.join(variants) or '(no variants)'}")
    if p.train_size < 1:
        raise SkillFactoryError(f"rl.data.train_size: no training questions (task.train_size="
                                f"{cfg.task.train_size}, rl.data.train_offset={p.train_offset})")
    template = variants[p.prompt_variant]
    task = get_task(cfg.task)
    train_q = task.questions("train", p.train_offset + p.train_size, seed=p.seed)[p.train_offset:]
    val_q = task.questions("val", p.val_size, seed=p.seed) if p.val_size else []
    system = cfg.prompts.system
    train_rows = rows_for(task, train_q, template, system, p.prompt_variant, p.seed)
    write_parquet(train_rows, out_dir / TRAIN_FILE)
    stats = {"train_rows": len(train_rows), "train_offset": p.train_offset, "val_rows": len(val_q),
             "prompt_variant": p.prompt_variant, "data_source": task.name, "train_file": TRAIN_FILE}
    if val_q:
        write_parquet(rows_for(task, val_q, template, system, p.prompt_variant, p.seed), out_dir / VAL_FILE)
        stats["val_file"] = VAL_FILE
    chars = [len(m["content"]) for r in train_rows for m in r["prompt"]]
    stats["prompt_chars_max"] = max(chars)
    log.info("rl data: %d train and %d val prompts (%s, variant %s) -> %s", len(train_rows), len(val_q),
             task.name, p.prompt_variant, out_dir / DATA_DIR)
    return stats


def prompt_token_lengths(rows_path: Path, tokenizer, template_kwargs: Optional[dict] = None) -> list[int]:
    """Token lengths of the rendered prompts of a data file (as verl measures them, with the
    model's ``chat_template_kwargs`` as verl's ``data.apply_chat_template_kwargs``)."""
    import pyarrow.parquet as pq

    prompts = pq.read_table(rows_path, columns=["prompt"]).column("prompt").to_pylist()
    out = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            **(template_kwargs or {}))
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out.append(len(ids))
    return out
