"""GRPO with TRL's ``GRPOTrainer`` on one machine (``rl=trl_grpo``; the tiny model's CPU path).

Same data files and same reward as verl (``rewards/answer_tag.py`` through
``skill_factory.rl.reward.trl_reward``), and the same GRPO settings where they map:

=====================================  =============================================================
``rl``                                 ``trl.GRPOConfig``
=====================================  =============================================================
rollout_n                              num_generations
train_batch_size x rollout_n           generation_batch_size (completions per rollout batch)
ppo_mini_batch_size x rollout_n        per_device_train_batch_size x gradient_accumulation_steps
                                       (completions per optimizer update; the micro-batch is
                                       ``rl.trl.micro_batch_size``)
learning_rate, total_epochs            learning_rate (constant, as verl's), num_train_epochs
max_prompt/response_length             max_prompt_length, max_completion_length
temperature, top_p                     temperature, top_p
kl_mechanism=loss, kl_coef             beta = kl_coef (TRL's KL term is the k3 estimator in the
                                       loss, verl's low_var_kl without its clamp); none: beta 0
adv_estimator=grpo                     scale_rewards="group" (verl's norm_adv_by_std_in_grpo),
                                       epsilon 0.2 (verl's clip_ratio), num_iterations 1
                                       (verl's ppo_epochs), loss_type dapo (verl's token-mean)
=====================================  =============================================================

So one TRL step, like one verl step, generates ``train_batch_size`` prompts x ``rollout_n``
completions and makes ``train_batch_size / ppo_mini_batch_size`` optimizer updates; TRL's
``global_step`` counts updates (``steps`` in the manifest), ``rollout_batches`` counts verl's
steps.

TRL 0.24 with transformers 5: transformers' ``_is_package_available`` now returns a tuple,
which TRL stores as its "is optional package X installed" flags; a non-empty tuple is always
true, so ``import trl``'s GRPO trainer tries to import mergekit (and other absent extras) and
fails. ``_fix_trl_optional_flags`` turns those flags back into booleans before the import.

Chat-template variables (``model.chat_template_kwargs``): TRL 0.24's ``GRPOTrainer`` renders
each prompt with ``maybe_apply_chat_template({"prompt": prompt}, processing_class)``
(``_generate_single_turn``), with no way to pass template variables and without the
dataset's other columns, so ``bind_template_kwargs`` binds them to the tokenizer instance.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from skill_factory.errors import SkillFactoryError

log = logging.getLogger(__name__)

MODEL_DIR = "model"
SCRATCH_DIR = "trl"
HISTORY_FILE = "trl_log_history.json"
# GRPOConfig arguments the rl settings own; rl.trl.extra may not set them
MANAGED = ("output_dir", "num_generations", "generation_batch_size", "steps_per_generation",
           "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "num_train_epochs",
           "max_steps", "max_prompt_length", "max_completion_length", "temperature", "top_p", "beta",
           "loss_type", "use_cpu", "bf16", "seed", "data_seed", "report_to", "save_strategy", "save_steps",
           "logging_steps", "remove_unused_columns")


def _fix_trl_optional_flags() -> None:
    import trl.import_utils as iu

    for name, value in list(vars(iu).items()):
        if name.startswith("_") and name.endswith("_available") and isinstance(value, tuple):
            setattr(iu, name, bool(value[0]))


def import_trl():
    """``(GRPOConfig, GRPOTrainer)``, importable next to transformers 5 (see module docstring)."""
    _fix_trl_optional_flags()
    from trl import GRPOConfig, GRPOTrainer

    return GRPOConfig, GRPOTrainer


def grpo_args(cfg, output_dir: Path, report_to: str = "none") -> dict[str, Any]:
    """``trl.GRPOConfig`` keyword arguments for ``cfg.rl`` (see the mapping above)."""
    rl, t = cfg.rl, cfg.rl.trl
    per_update = rl.ppo_mini_batch_size * rl.rollout_n
    if per_update % t.micro_batch_size:
        raise SkillFactoryError(f"rl.trl.micro_batch_size: {t.micro_batch_size} does not divide "
                                f"rl.ppo_mini_batch_size x rl.rollout_n = {per_update}")
    clash = sorted(set(t.extra) & set(MANAGED))
    if clash:
        raise SkillFactoryError(f"rl.trl.extra: {', '.join(clash)} are set by the rl settings; use those instead")
    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_generations": rl.rollout_n,
        "generation_batch_size": rl.train_batch_size * rl.rollout_n,
        "per_device_train_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": per_update // t.micro_batch_size,
        "learning_rate": rl.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "num_train_epochs": float(rl.total_epochs),
        "max_steps": t.max_steps if t.max_steps is not None else -1,
        "max_prompt_length": rl.max_prompt_length,
        "max_completion_length": rl.max_response_length,
        "temperature": rl.temperature,
        "top_p": rl.top_p,
        "beta": rl.kl_coef if rl.kl_mechanism == "loss" else 0.0,
        "epsilon": 0.2,
        "num_iterations": 1,
        "scale_rewards": "group",
        "loss_type": t.loss_type,
        "use_cpu": t.use_cpu,
        "bf16": False,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps" if t.save_steps else "no",
        "report_to": report_to,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "shuffle_dataset": True,
        "log_completions": False,
    }
    if t.save_steps:
        args["save_steps"] = t.save_steps
    args.update(t.extra)
    return args


def bind_template_kwargs(tokenizer, template_kwargs) -> None:
    """Make ``tokenizer.apply_chat_template`` pass ``template_kwargs`` (a call's own keywords win)."""
    if template_kwargs:
        import functools

        tokenizer.apply_chat_template = functools.partial(tokenizer.apply_chat_template, **dict(template_kwargs))


def _log_callback():
    """A transformers callback writing TRL's per-step metrics to ``logging`` (not stdout)."""
    from transformers import TrainerCallback

    class LogMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "reward" in logs:
                log.info("rl (trl) step %d/%d: reward %.4f (group std %.4f, zero-std groups %.2f), length %.1f, "
                         "kl %.3g, loss %.3g", state.global_step, state.max_steps, logs["reward"],
                         logs.get("reward_std", 0.0), logs.get("frac_reward_zero_std", 0.0),
                         logs.get("completions/mean_length", 0.0), logs.get("kl", 0.0), logs.get("loss", 0.0))
            elif "train_runtime" in logs:
                log.info("rl (trl): trained in %.1f s", logs["train_runtime"])

    return LogMetrics()


def reward_function(cfg):
    """The reward file's batch function (``compute_score_batch``), adapted to TRL."""
    from skill_factory.rl.reward import BATCH_FUNCTION, load_function, reward_file, trl_reward

    return trl_reward(load_function(reward_file(cfg), BATCH_FUNCTION), cfg.rl.reward_kwargs)


def preflight(cfg, model_path: str, train_file: Path, output_dir: Path) -> dict:
    """TRL's own check of the settings (``GRPOConfig``), the reward file, the data and the model."""
    import pyarrow.parquet as pq

    from skill_factory.rl.reward import BATCH_ARGS, BATCH_FUNCTION, accepts, load_function, reward_file

    checks = []
    GRPOConfig, _ = import_trl()
    kwargs = grpo_args(cfg, output_dir)
    try:
        GRPOConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SkillFactoryError(f"rl.trl: trl.GRPOConfig rejects the settings: {exc}") from exc
    checks.append("GRPOConfig")
    fn = load_function(reward_file(cfg), BATCH_FUNCTION)
    if not accepts(fn, BATCH_ARGS):
        raise SkillFactoryError(f"rl.reward_file: {BATCH_FUNCTION} of {reward_file(cfg)} cannot take "
                                f"{', '.join(BATCH_ARGS)}")
    checks.append("reward function")
    names = pq.read_schema(train_file).names
    missing = [c for c in ("prompt", "data_source", "reward_model", "extra_info") if c not in names]
    if missing:
        raise SkillFactoryError(f"rl: {train_file} lacks the column(s) {', '.join(missing)}")
    checks.append("data files")
    path = Path(model_path)
    if path.exists() and not (path / "config.json").is_file():
        raise SkillFactoryError(f"rl.init_checkpoint: {model_path} is not a Hugging Face model folder")
    checks.append("model path")
    return {"checks": checks, "grpo_config": {k: v for k, v in kwargs.items() if k != "output_dir"}}


def reward_summary(history: list[dict], points: int = 20) -> dict:
    """Reward mean/std per logged step: first, last, best, and at most ``points`` of the curve."""
    rows = [h for h in history if "reward" in h and "step" in h]
    if not rows:
        return {"points": 0}
    stride = max(1, math.ceil(len(rows) / points))
    sampled = rows[::stride]
    if sampled[-1] is not rows[-1]:
        sampled.append(rows[-1])

    def r(x):
        return None if x is None else round(float(x), 4)

    means = [float(h["reward"]) for h in rows]
    return {
        "points": len(rows),
        "first": r(means[0]), "last": r(means[-1]), "max": r(max(means)), "mean": r(sum(means) / len(means)),
        "std_mean": r(sum(float(h.get("reward_std", 0.0)) for h in rows) / len(rows)),
        "frac_reward_zero_std_mean": r(sum(float(h.get("frac_reward_zero_std", 0.0)) for h in rows) / len(rows)),
        "curve": [[int(h["step"]), r(h["reward"]), r(h.get("reward_std"))] for h in sampled],
    }


def train(cfg, model_path: str, train_file: Path, out_dir: Path, reward_fn, report_to: str = "none",
          run_name: str | None = None) -> dict:
    """Train with TRL's GRPOTrainer; save the final Hugging Face model to ``out_dir/model``."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    GRPOConfig, GRPOTrainer = import_trl()
    t = cfg.rl.trl
    previous_threads = torch.get_num_threads()
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)
    try:
        kwargs = grpo_args(cfg, out_dir / SCRATCH_DIR, report_to)
        if run_name:
            kwargs["run_name"] = run_name
        try:
            args = GRPOConfig(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SkillFactoryError(f"rl.trl: trl.GRPOConfig rejects the settings: {exc}") from exc
        dataset = datasets.load_dataset("parquet", data_files=str(train_file), split="train")
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        bind_template_kwargs(tokenizer, cfg.model.chat_template_kwargs)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32,
                                                     trust_remote_code=cfg.model.trust_remote_code)
        if not hasattr(model, "warnings_issued"):  # transformers 5 dropped it; TRL 0.24 writes to it
            model.warnings_issued = {}
        trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=dataset,
                              processing_class=tokenizer)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # its print()s become log lines instead
        trainer.add_callback(_log_callback())
        log.info("rl (trl): %d prompts, %d completions per step in micro-batches of %d, %d update(s) per step",
                 len(dataset), args.generation_batch_size, args.per_device_train_batch_size,
                 args.generation_batch_size // (args.per_device_train_batch_size * args.gradient_accumulation_steps))
        result = trainer.train()
        final = out_dir / MODEL_DIR
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        history = list(trainer.state.log_history)
        (out_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1, sort_keys=True) + "\n")
        steps = int(trainer.state.global_step)
        updates_per_batch = cfg.rl.train_batch_size // cfg.rl.ppo_mini_batch_size
        return {
            "steps": steps,
            "rollout_batches": steps // max(updates_per_batch, 1),
            "epochs": trainer.state.epoch,
            "reward": reward_summary(history),
            "train_loss": getattr(result, "training_loss", None),
            "train_runtime_s": (result.metrics or {}).get("train_runtime"),
            "grpo_config": {k: v for k, v in kwargs.items() if k != "output_dir"},
        }
    finally:
        torch.set_num_threads(previous_threads)
