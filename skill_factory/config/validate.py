"""``validate(cfg)``: every semantic config error, all at once, before any work starts.

Why: type errors and misspelled keys already fail at compose time (the schema); this
catches values that are well-typed but wrong (a negative temperature, an unknown trace
format, a batch size the mini-batch does not divide). Each check adds a dotted key, what
is wrong and the fix; one ``ConfigError`` lists them all. Stages add their own checks
through the ``check`` hook of ``@stage``; only the stages this run will execute are asked.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from skill_factory.config.problems import Problems
from skill_factory.config.schema import SkillFactoryConfig
from skill_factory.errors import SkillFactoryError
from skill_factory.tasks import config as task_config
from skill_factory.tracebuild import FORMATS as TRACE_FORMATS  # one list of trace formats
from skill_factory.tracebuild import phrase_problems

GENERATION_BACKENDS = ("hf", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
FINETUNING_TYPES = ("full", "lora", "freeze")
# DeepSpeed ZeRO stages with a shipped config (conf/deepspeed/ds_z<stage>.json); 0 = none
ZERO_STAGES = (0, 2, 3)
RL_BACKENDS = ("verl", "trl")
KL_MECHANISMS = ("loss", "reward", "none")
EVAL_MODELS = ("base", "sft", "rl")
EVAL_DECODINGS = ("greedy", "sampled")
LOGGERS = ("none", "wandb")
WANDB_MODES = ("online", "offline", "disabled")


def _one_of(p: Problems, key: str, value, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        p.add(key, f"'{value}' is not one of {', '.join(allowed)}", f"use one of {', '.join(allowed)}")


def _at_least(p: Problems, key: str, value, low) -> None:
    if value < low:
        p.add(key, f"must be >= {low}, got {value}", f"set {key} to {low} or more")


def _positive(p: Problems, key: str, value) -> None:
    if not value > 0:
        p.add(key, f"must be > 0, got {value}", f"set {key} to a positive number")


def _sampling(p: Problems, prefix: str, temperature: float, top_p: float, max_new_tokens: int):
    _at_least(p, f"{prefix}.temperature", temperature, 0)
    if not 0 < top_p <= 1:
        p.add(f"{prefix}.top_p", f"must be in (0, 1], got {top_p}", "use a value such as 1.0 or 0.95")
    _at_least(p, f"{prefix}.max_new_tokens", max_new_tokens, 1)


def check_sections(cfg: SkillFactoryConfig, p: Problems) -> None:
    _at_least(p, "seed", cfg.seed, 0)

    m = cfg.model
    _one_of(p, "model.backend", m.backend, GENERATION_BACKENDS)
    _one_of(p, "model.dtype", m.dtype, DTYPES)
    _at_least(p, "model.max_length", m.max_length, 16)

    task_config.check(cfg.task, p, "task")

    s = cfg.sample
    _at_least(p, "sample.n", s.n, 1)
    _at_least(p, "sample.num_questions", s.num_questions, 1)
    _at_least(p, "sample.shard_size", s.shard_size, 1)
    _sampling(p, "sample", s.temperature, s.top_p, s.max_new_tokens)

    r = cfg.reflect
    _at_least(p, "reflect.k", r.k, 1)
    _at_least(p, "reflect.shard_size", r.shard_size, 1)
    _sampling(p, "reflect", r.temperature, r.top_p, r.max_new_tokens)
    for i, pattern in enumerate(r.banned_patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            p.add(f"reflect.banned_patterns[{i}]", f"not a valid regular expression ({exc})",
                  "escape special characters, e.g. with a backslash")

    t = cfg.traces
    if not t.formats:
        p.add("traces.formats", "is empty", f"list one or more of {', '.join(TRACE_FORMATS)}")
    for i, fmt in enumerate(t.formats):
        _one_of(p, f"traces.formats[{i}]", fmt, TRACE_FORMATS)
        if fmt in t.formats[:i]:
            p.add(f"traces.formats[{i}]", f"'{fmt}' is listed twice", "list each format once")
    _at_least(p, "traces.n_samples", t.n_samples, 1)
    if {"*C*IC", "*CC"} & set(t.formats) and t.n_samples < 2:
        p.add("traces.n_samples", "*C*IC and *CC need at least 2 samples per trace",
              "set traces.n_samples to 2 or more")
    if t.random_n and t.n_samples < 2:
        p.add("traces.random_n", f"draws N in [2, traces.n_samples] but traces.n_samples={t.n_samples}",
              "set traces.n_samples to 2 or more, or traces.random_n=false")
    _at_least(p, "traces.repeats", t.repeats, 1)
    if t.subsample is not None:
        _at_least(p, "traces.subsample", t.subsample, 1)
    if t.variants is not None and not t.variants:
        p.add("traces.variants", "is an empty list", "use null for all variants, or name some")
    if t.variants and len(set(t.variants)) != len(t.variants):
        p.add("traces.variants", "names a variant twice", "list each variant once")
    if t.push_to_hub is not None and not t.push_to_hub.strip():
        p.add("traces.push_to_hub", "is empty", "use null to not push, or a hub repo id owner/name")
    for key, what, fix in phrase_problems(cfg.phrases, t.formats, t.n_samples):
        p.add(key, what, fix)

    f = cfg.sft
    _one_of(p, "sft.finetuning_type", f.finetuning_type, FINETUNING_TYPES)
    _positive(p, "sft.learning_rate", f.learning_rate)
    _positive(p, "sft.num_train_epochs", f.num_train_epochs)
    if not 0 <= f.warmup_ratio < 1:
        p.add("sft.warmup_ratio", f"must be in [0, 1), got {f.warmup_ratio}", "e.g. 0.05")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_samples", "max_steps",
                "save_steps", "save_total_limit", "nnodes", "gpus_per_node", "cpu_threads"):
        if getattr(f, key) is not None:
            _at_least(p, f"sft.{key}", getattr(f, key), 1)
    if f.cutoff_len is not None:
        _at_least(p, "sft.cutoff_len", f.cutoff_len, 16)
    _at_least(p, "sft.logging_steps", f.logging_steps, 1)
    for key in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(f, key) < 1:
            p.add(f"sft.{key}", f"must be in [0, 1), got {getattr(f, key)}", "e.g. 0.9 or 0.95")
    _at_least(p, "sft.weight_decay", f.weight_decay, 0)
    _at_least(p, "sft.lora_rank", f.lora_rank, 1)
    if f.lora_alpha is not None:
        _at_least(p, "sft.lora_alpha", f.lora_alpha, 1)
    if not 0 <= f.lora_dropout < 1:
        p.add("sft.lora_dropout", f"must be in [0, 1), got {f.lora_dropout}", "e.g. 0.0 or 0.05")
    if f.zero_stage is not None and f.zero_stage not in ZERO_STAGES:
        p.add("sft.zero_stage", f"{f.zero_stage} is not one of {', '.join(map(str, ZERO_STAGES))}",
              "use 0 (no DeepSpeed), 2 or 3, or null for the model's resources.zero_stage")
    if f.deepspeed is not None and not Path(f.deepspeed).is_file():
        p.add("sft.deepspeed", f"file not found: {f.deepspeed}",
              "point it at a DeepSpeed json config, or set it to null")
    if f.master_port is not None and not 1 <= f.master_port <= 65535:
        p.add("sft.master_port", f"{f.master_port} is not a TCP port", "use e.g. 29500")
    if f.node_rank is not None:
        _at_least(p, "sft.node_rank", f.node_rank, 0)
    if f.dataset is not None and not f.dataset.strip():
        p.add("sft.dataset", "is empty", "give a ShareGPT dataset (sft.dataset=path/to/traces.parquet, or a "
              "hub id), or null to train on the traces stage's output (the pipeline builds it first)")
    res = cfg.model.resources
    for key in ("nnodes", "gpus_per_node", "sft_per_device_batch", "sft_gradient_accumulation"):
        _at_least(p, f"model.resources.{key}", getattr(res, key), 1)
    _at_least(p, "model.resources.sft_cutoff_len", res.sft_cutoff_len, 16)
    if res.zero_stage not in ZERO_STAGES:
        p.add("model.resources.zero_stage", f"{res.zero_stage} is not one of {', '.join(map(str, ZERO_STAGES))}",
              "use 0 (no DeepSpeed), 2 or 3")

    rl = cfg.rl
    _one_of(p, "rl.backend", rl.backend, RL_BACKENDS)
    _one_of(p, "rl.kl_mechanism", rl.kl_mechanism, KL_MECHANISMS)
    _at_least(p, "rl.rollout_n", rl.rollout_n, 1)
    _at_least(p, "rl.train_batch_size", rl.train_batch_size, 1)
    _at_least(p, "rl.ppo_mini_batch_size", rl.ppo_mini_batch_size, 1)
    if rl.ppo_mini_batch_size >= 1 and rl.train_batch_size % rl.ppo_mini_batch_size:
        p.add("rl.ppo_mini_batch_size",
              f"{rl.ppo_mini_batch_size} does not divide rl.train_batch_size={rl.train_batch_size}",
              "choose a mini-batch size that divides the train batch size")
    _positive(p, "rl.learning_rate", rl.learning_rate)
    _at_least(p, "rl.total_epochs", rl.total_epochs, 1)
    _at_least(p, "rl.kl_coef", rl.kl_coef, 0)
    _at_least(p, "rl.max_prompt_length", rl.max_prompt_length, 1)
    _at_least(p, "rl.max_response_length", rl.max_response_length, 1)
    _at_least(p, "rl.temperature", rl.temperature, 0)
    if not 0 < rl.top_p <= 1:
        p.add("rl.top_p", f"must be in (0, 1], got {rl.top_p}", "use a value such as 1.0 or 0.95")
    if rl.init_checkpoint is not None and not rl.init_checkpoint.strip():
        p.add("rl.init_checkpoint", "is empty", "use null (the sft checkpoint), base, or a path / hub id")
    d = rl.data
    if d.train_size is not None:
        _at_least(p, "rl.data.train_size", d.train_size, 1)
    _at_least(p, "rl.data.train_offset", d.train_offset, 0)
    if d.val_size is not None:
        _at_least(p, "rl.data.val_size", d.val_size, 0)
    if rl.backend == "trl":
        if rl.adv_estimator != "grpo":
            p.add("rl.adv_estimator", f"TRL implements GRPO only, got '{rl.adv_estimator}'",
                  "use rl.adv_estimator=grpo, or rl=verl_grpo")
        if rl.kl_mechanism == "reward":
            p.add("rl.kl_mechanism", "TRL has no KL-in-reward penalty",
                  "use loss (TRL's beta) or none, or rl=verl_grpo")
        t = rl.trl
        _at_least(p, "rl.trl.micro_batch_size", t.micro_batch_size, 1)
        per_update = rl.ppo_mini_batch_size * rl.rollout_n
        if t.micro_batch_size >= 1 and per_update % t.micro_batch_size:
            p.add("rl.trl.micro_batch_size", f"{t.micro_batch_size} does not divide the completions of one "
                  f"update (rl.ppo_mini_batch_size x rl.rollout_n = {per_update})",
                  "choose a micro-batch that divides it")
        for key in ("max_steps", "save_steps", "torch_threads"):
            if getattr(t, key) is not None:
                _at_least(p, f"rl.trl.{key}", getattr(t, key), 1)
        _at_least(p, "rl.trl.logging_steps", t.logging_steps, 1)
    else:
        v = rl.verl
        for key in ("nnodes", "gpus_per_node"):
            if getattr(v, key) is not None:
                _at_least(p, f"rl.verl.{key}", getattr(v, key), 1)
        for key in ("max_num_batched_tokens", "max_num_seqs"):
            _at_least(p, f"rl.verl.{key}", getattr(v, key), 1)
        if v.save_freq < 1:
            p.add("rl.verl.save_freq", f"must be >= 1, got {v.save_freq} (verl then saves no checkpoint, "
                  "and the handoff needs the last one)", "use e.g. 25 (the last step always saves)")
        if v.max_checkpoints is not None:
            _at_least(p, "rl.verl.max_checkpoints", v.max_checkpoints, 1)
        if not 1 <= v.ray_port <= 65535:
            p.add("rl.verl.ray_port", f"{v.ray_port} is not a TCP port", "use e.g. 6379")
        for i, item in enumerate(v.extra_overrides):
            if "=" not in item or item.startswith(("=", "~")) or not item.split("=", 1)[0].strip("+"):
                p.add(f"rl.verl.extra_overrides[{i}]", f"'{item}' is not a key=value override",
                      "write e.g. actor_rollout_ref.actor.clip_ratio_high=0.28 (+key=value adds a key)")
    res = cfg.model.resources
    for key in ("rl_micro_batch_per_gpu", "rl_log_prob_micro_batch_per_gpu", "rollout_tensor_parallel_size"):
        _at_least(p, f"model.resources.{key}", getattr(res, key), 1)
    if not 0 < res.rollout_gpu_memory_utilization <= 1:
        p.add("model.resources.rollout_gpu_memory_utilization",
              f"must be in (0, 1], got {res.rollout_gpu_memory_utilization}", "use e.g. 0.6")

    e = cfg.eval
    if not e.model or not e.model.strip():
        p.add("eval.model", "is empty", f"use one of {', '.join(EVAL_MODELS)} or a path / hub id")
    _at_least(p, "eval.n", e.n, 1)
    _sampling(p, "eval", e.temperature, e.top_p, e.max_new_tokens)
    if e.temperature == 0 and e.n > 1:
        p.add("eval.n", f"greedy decoding (temperature 0) gives {e.n} identical samples",
              "set eval.n=1 for greedy, or a temperature > 0 for sampling")
    for i, k in enumerate(e.pass_k):
        _at_least(p, f"eval.pass_k[{i}]", k, 1)
    _at_least(p, "eval.question_seed", e.question_seed, 0)
    bf = e.budget_forcing
    _at_least(p, "eval.budget_forcing.max_rounds", bf.max_rounds, 0)
    _at_least(p, "eval.budget_forcing.answer_max_new_tokens", bf.answer_max_new_tokens, 1)
    _one_of(p, "eval.budget_forcing.decoding", bf.decoding, EVAL_DECODINGS)
    if bf.budgets and bf.decoding == "sampled" and e.temperature == 0:
        p.add("eval.budget_forcing.decoding", "sampled needs eval.temperature > 0",
              "use greedy, or set eval.temperature (and eval.n)")
    if len(set(bf.budgets)) != len(bf.budgets):
        p.add("eval.budget_forcing.budgets", "lists a budget twice", "list each budget once")
    if bf.max_rounds > 0 and not [c for c in bf.continuation if c]:
        p.add("eval.budget_forcing.continuation", "has no phrase", 'give one or more, e.g. ["Wait"]')
    for i, m in enumerate(bf.markers):
        if not m.text:
            p.add(f"eval.budget_forcing.markers[{i}].text", "is empty", "give the marker text, e.g. </think>")

    lg = cfg.logger
    _one_of(p, "logger.name", lg.name, LOGGERS)
    if lg.wandb.mode is not None:
        _one_of(p, "logger.wandb.mode", lg.wandb.mode, WANDB_MODES)


def validate(cfg: SkillFactoryConfig, registry=None) -> None:
    """Raise one ``ConfigError`` listing every problem of ``cfg`` (or return quietly)."""
    from skill_factory import pipeline

    if registry is None:
        import skill_factory.stages  # noqa: F401 - the built-in stages register on import

        registry = pipeline.REGISTRY
    p = Problems()
    check_sections(cfg, p)
    known = pipeline.order_stages(registry)
    seen = set()
    for i, name in enumerate(cfg.stages):
        if name not in registry:
            p.add(f"stages[{i}]", f"unknown stage '{name}'",
                  f"use some of: {', '.join(known) or '(no stage is registered)'}")
        elif name in seen:
            p.add(f"stages[{i}]", f"'{name}' is listed twice", "list each stage once")
        seen.add(name)
    if not p:
        try:
            names = pipeline.plan(cfg, registry)
        except SkillFactoryError as exc:
            p.add("stages", str(exc), "check the stage list and plugins")
            names = []
        for name in names:
            if registry[name].check is not None:
                registry[name].check(cfg, p)
    p.raise_if_any()
