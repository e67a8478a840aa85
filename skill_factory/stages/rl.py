"""rl: GRPO from the SFT checkpoint, with verl (GPUs, the paper's run) or TRL (one machine, CPU).

    skillfactory stages=[rl]                                        # tiny model: TRL on CPU (rl=trl_grpo)
    skillfactory model=qwen2_5_1_5b_instruct stages=[rl]            # the paper's verl run (rl=verl_grpo)
    skillfactory model=qwen2_5_1_5b_instruct rl=verl_grpo rl.dry_run=true stages=[rl] \\
        rl.init_checkpoint=/path/to/sft/model                       # write + check the launch, print it
    skillfactory stages=[rl] rl.init_checkpoint=base                # RL from the base model (baseline)

What it does, inside the stage's artifact directory:

1. **data**: ``data/train.parquet`` and ``data/val.parquet`` in verl's RL layout
   (``skill_factory.rl.data``): the task's questions rendered with the prompt variant
   ``rl.data.prompt_variant`` as the sample stage renders it; both backends read these files.
2. **verl** (``rl.backend=verl``): the overrides, the pre-flight (verl's own config composed
   in-process and its ``validate_config``, plus our checks), ``launch.sh`` / ``launch.json``
   with the exact command; then ``python -m verl.trainer.main_ppo`` streamed to ``verl.log``
   (FSDP checkpoints in ``checkpoints/``; a killed run resumes from the last one), and the
   handoff: verl's model merger turns the last checkpoint into ``model/``.
   **TRL** (``rl.backend=trl``): ``trl.GRPOConfig`` from the same settings, checked by TRL,
   then ``GRPOTrainer`` in-process with the same reward file; the final model in ``model/``.

The manifest counts hold ``checkpoint`` (the Hugging Face folder the eval stage loads: use
``rl_checkpoint(artifact)``), steps, the reward curve (TRL: mean/std per step; verl: the
``critic/score/mean`` curve from its console log), the data statistics, the command and the
pre-flight report.

Why ``dry_run`` is part of the fingerprint (as in the sft stage): a finished artifact is one
with a manifest, and a later real run must never reuse a directory that holds no checkpoint.
A dry run is therefore its own artifact (data, files, command, pre-flight report, ``dry_run:
true``; ``rl_checkpoint`` refuses it); the real run of the same settings trains elsewhere.
A dry run may follow an sft dry run: the launch then names the sft stage's planned checkpoint.

Why resumable: verl checkpoints every ``rl.verl.save_freq`` steps and resumes from the newest
one by itself (``trainer.resume_mode=auto``), so a killed verl run must keep its directory;
the data files are rewritten identically. A TRL run (minutes, no optimizer state saved)
starts over.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from skill_factory.errors import SkillFactoryError
from skill_factory.models import base_model_path, check_model, model_upstream
from skill_factory.pipeline import stage

log = logging.getLogger(__name__)

MODEL_DIR = "model"
RESOURCE_KEYS = ("nnodes", "gpus_per_node", "rl_micro_batch_per_gpu", "rl_log_prob_micro_batch_per_gpu",
                 "rollout_tensor_parallel_size", "rollout_gpu_memory_utilization", "param_offload",
                 "optimizer_offload", "ref_param_offload")


def _task_keys() -> tuple[str, ...]:
    from skill_factory.tasks.config import TaskConfig

    # the default template is unused: RL prompts are rendered with rl.data.prompt_variant
    return tuple(f"task.{f.name}" for f in fields(TaskConfig) if f.name != "template")


CONFIG_KEYS = ("rl.output_settings", "model.name", "model.path", "model.trust_remote_code",
               "model.chat_template_kwargs", *(f"model.resources.{k}" for k in RESOURCE_KEYS), *_task_keys(),
               "prompts.variants", "prompts.system", "seed")


def _upstream(cfg) -> tuple[str, ...]:
    init = cfg.rl.init_checkpoint
    if init is None:
        return ("sft",)
    if init == "base":
        return model_upstream(cfg)
    return ()


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or Path(path).expanduser().exists() or path.count("/") != 1


def _check(cfg, problems) -> None:
    from skill_factory.rl import verl_run
    from skill_factory.rl.data import plan
    from skill_factory.rl.reward import reward_file

    rl = cfg.rl
    init = rl.init_checkpoint
    if init == "base":
        check_model(cfg, problems)
    elif init is not None and init.strip() and _looks_local(init):
        path = Path(init).expanduser()
        if not path.is_dir():
            problems.add("rl.init_checkpoint", f"no such folder: {init}",
                         "point it at a Hugging Face model folder (or a hub id, or null for the sft checkpoint)")
        elif not (path / "config.json").is_file():
            problems.add("rl.init_checkpoint", f"{init} has no config.json (not a Hugging Face model folder)",
                         "point it at the folder holding config.json and the weights")
    if rl.data.prompt_variant not in (cfg.prompts.variants or {}):
        problems.add("rl.data.prompt_variant", f"'{rl.data.prompt_variant}' is not a prompt variant",
                     f"use one of {', '.join(cfg.prompts.variants or {}) or '(none defined)'}")
    d = plan(cfg)
    if rl.data.train_size is not None and d.train_offset + d.train_size > cfg.task.train_size:
        problems.add("rl.data.train_size", f"offset {d.train_offset} + {d.train_size} questions exceed the task's "
                     f"train split (task.train_size={cfg.task.train_size})",
                     "lower rl.data.train_size / train_offset or raise task.train_size")
    if d.train_size < 1:
        problems.add("rl.data.train_offset", f"leaves no training question (task.train_size={cfg.task.train_size})",
                     "lower rl.data.train_offset")
    path = reward_file(cfg)
    if not path.is_file():
        problems.add("rl.reward_file", f"reward file not found: {path}", "point it at a Python file, or null for ours")
    if rl.max_prompt_length + rl.max_response_length > cfg.model.max_length:
        problems.add("rl.max_response_length", f"prompt {rl.max_prompt_length} + response {rl.max_response_length} "
                     f"tokens exceed model.max_length={cfg.model.max_length}",
                     "lower rl.max_response_length or rl.max_prompt_length")
    if rl.backend == "verl":
        if d.val_size < 1:
            problems.add("rl.data.val_size", "verl validates on the val split and needs at least one question",
                         "set rl.data.val_size to 1 or more (e.g. 200)")
        verl_run.static_problems(cfg, problems)


def init_checkpoint(cfg, inputs, dry_run: bool) -> tuple[str, str]:
    """(model folder or hub id the policy starts from, where it came from)."""
    init = cfg.rl.init_checkpoint
    if init is None:
        from skill_factory.stages.sft import sft_checkpoint

        sft = inputs["sft"]
        if sft.counts.get("dry_run"):
            planned = sft.counts.get("planned_checkpoint")
            if dry_run and planned:
                log.warning("rl: the sft artifact %s is a dry run; the launch names its planned checkpoint %s",
                            sft.path, planned)
                return planned, "sft (dry run: planned checkpoint)"
            raise SkillFactoryError(f"rl.init_checkpoint: the sft artifact {sft.path} is a dry run and holds no "
                                    "checkpoint (fix: run sft without sft.dry_run, set rl.init_checkpoint, or "
                                    "rl.dry_run=true)")
        return sft_checkpoint(sft), f"sft:{sft.fingerprint}"
    if init == "base":
        return base_model_path(cfg, inputs), "base"
    path = Path(init).expanduser()
    return (str(path.resolve()), "path") if path.exists() else (init, "hub")


def _experiment_name(cfg, fingerprint: str) -> str:
    if cfg.rl.verl.experiment_name:
        return cfg.rl.verl.experiment_name
    return f"{cfg.model.name}-rl-{fingerprint}"


def _keep_failure(cfg, out: Path, names: tuple[str, ...]) -> Path:
    """Copy the small files of a failed attempt next to the run's outputs."""
    base = Path(cfg.paths.run_dir) if cfg.paths.run_dir else out.parent
    keep = base / f"rl-failed-{out.name}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (out / name).is_file():
            shutil.copyfile(out / name, keep / name)
    return keep


def ctx_origin_planned(counts: dict) -> bool:
    return str(counts.get("init_origin", "")).startswith("sft (dry run")


# --- verl --------------------------------------------------------------------------------

def _run_verl(ctx, model: str, counts: dict) -> dict:
    from skill_factory.llamafactory.launch import run_streamed
    from skill_factory.rl import verl_run as vr
    from skill_factory.rl.data import TRAIN_FILE, VAL_FILE
    from skill_factory.rl.reward import reward_file

    cfg, out, v = ctx.cfg, ctx.out_dir, ctx.cfg.rl.verl
    dry = cfg.rl.dry_run
    paths = vr.Paths(model=model, train_file=str(out / TRAIN_FILE),
                     val_file=str(out / VAL_FILE) if (out / VAL_FILE).exists() else None,
                     checkpoint_dir=str(out / vr.CHECKPOINT_DIR), reward_file=str(reward_file(cfg)),
                     hydra_dir=str(out / "hydra"))
    loggers = ["console", "wandb"] if cfg.logger.name == "wandb" else ["console"]
    ovr = vr.overrides(cfg, paths, experiment_name=_experiment_name(cfg, ctx.fingerprint), loggers=loggers)
    res = vr.resources(cfg)
    try:
        address = vr.ray_address(cfg, res)
    except SkillFactoryError:
        if not dry:
            raise
        address = None  # a dry run outside the cluster: launch.sh asks for RAY_ADDRESS when run
    report = vr.preflight(cfg, ovr, paths, dry_run=dry, planned_model=ctx_origin_planned(counts))
    ctx.log.info("rl: pre-flight passed: %s", ", ".join(report["checks"]))
    env = vr.launch_env(cfg, address)
    train = vr.train_command(ovr, vr.hydra_overrides(paths), env)
    target = str(out / MODEL_DIR) if v.merge else None
    script = vr.launch_script(train, paths.checkpoint_dir, target, cfg.model.trust_remote_code,
                              require_ray=res.nnodes > 1 and address is None)
    (out / "launch.sh").write_text(script)
    (out / "launch.sh").chmod(0o755)
    launch = {"train": train.as_dict(), "overrides": ovr, "hydra_overrides": vr.hydra_overrides(paths),
              "merge": vr.merge_command(f"{paths.checkpoint_dir}/global_step_<last>/actor", target or "",
                                        cfg.model.trust_remote_code).as_dict() if target else None}
    (out / "launch.json").write_text(json.dumps(launch, indent=2) + "\n")
    counts.update(preflight=report, launch=launch, settings=vr.settings_summary(cfg),
                  files={n: str(out / n) for n in ("launch.sh", "launch.json", TRAIN_FILE, VAL_FILE)
                         if (out / n).exists()})
    if dry:
        ctx.log.info("rl dry run: nothing was trained. launch.sh (%s):\n%s", out / "launch.sh", script)
        counts["planned_checkpoint"] = target
        return counts
    code = run_streamed(train, out / vr.LOG_FILE, ctx.log, prefix="[verl]")
    if code != 0:
        keep = _keep_failure(cfg, out, ("launch.sh", "launch.json", vr.LOG_FILE))
        raise SkillFactoryError(f"rl: verl.trainer.main_ppo exited with code {code}; its log: {keep / vr.LOG_FILE} "
                                "(the launch files are beside it; rerun to resume from the last checkpoint)")
    step, actor = vr.last_checkpoint(Path(paths.checkpoint_dir))
    counts.update(steps=step, fsdp_checkpoint=str(actor),
                  metrics=vr.metrics_from_log((out / vr.LOG_FILE).read_text(errors="replace")))
    if target:
        shutil.rmtree(target, ignore_errors=True)
        merge = vr.merge_command(str(actor), target, cfg.model.trust_remote_code)
        code = run_streamed(merge, out / vr.LOG_FILE, ctx.log, prefix="[verl merge]")
        if code != 0 or not (Path(target) / "config.json").is_file():
            keep = _keep_failure(cfg, out, ("launch.sh", "launch.json", vr.LOG_FILE))
            raise SkillFactoryError(f"rl: verl's model merger failed (code {code}) on {actor}; its log: "
                                    f"{keep / vr.LOG_FILE}")
        counts.update(checkpoint=target, checkpoint_dir=MODEL_DIR)
    return counts


# --- TRL -----------------------------------------------------------------------------------

def _run_trl(ctx, model: str, counts: dict) -> dict:
    from skill_factory.rl import trl_grpo
    from skill_factory.rl.data import TRAIN_FILE

    cfg, out = ctx.cfg, ctx.out_dir
    if ctx.resuming:
        for name in (trl_grpo.SCRATCH_DIR, MODEL_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        ctx.log.info("rl (trl): an unfinished TRL run starts over")
    report = trl_grpo.preflight(cfg, model, out / TRAIN_FILE, out / trl_grpo.SCRATCH_DIR)
    ctx.log.info("rl: pre-flight passed: %s", ", ".join(report["checks"]))
    counts["preflight"] = report
    if cfg.rl.dry_run:
        ctx.log.info("rl dry run (trl): nothing was trained; GRPOConfig: %s", report["grpo_config"])
        counts["planned_checkpoint"] = str(out / MODEL_DIR)
        return counts
    reward_fn = trl_grpo.reward_function(cfg)
    run_name = _experiment_name(cfg, ctx.fingerprint)
    result = trl_grpo.train(cfg, model, out / TRAIN_FILE, out, reward_fn,
                            report_to="wandb" if cfg.logger.name == "wandb" else "none", run_name=run_name)
    counts.update(result)
    counts.update(checkpoint=str(out / MODEL_DIR), checkpoint_dir=MODEL_DIR)
    reward = result["reward"]
    ctx.log.info("rl (trl): %d steps, reward mean %s -> %s (group std %s on average); checkpoint %s",
                 result["steps"], reward.get("first"), reward.get("last"), reward.get("std_mean"), out / MODEL_DIR)
    return counts


@stage("rl", config=CONFIG_KEYS, upstream=_upstream, resumable=True, check=_check)
def rl(ctx) -> dict:
    from skill_factory.rl.data import write_rl_data

    cfg = ctx.cfg
    model, origin = init_checkpoint(cfg, ctx.inputs, cfg.rl.dry_run)
    ctx.log.info("rl: %s GRPO from %s (%s)", cfg.rl.backend, model, origin)
    counts: dict[str, Any] = {"dry_run": cfg.rl.dry_run, "backend": cfg.rl.backend, "init_checkpoint": model,
                              "init_origin": origin, "data": write_rl_data(cfg, ctx.out_dir)}
    if cfg.rl.backend == "verl":
        return _run_verl(ctx, model, counts)
    return _run_trl(ctx, model, counts)


def rl_checkpoint(artifact) -> str:
    """The Hugging Face model folder an rl artifact produced (what the eval stage loads)."""
    from skill_factory.models import trained_checkpoint

    return trained_checkpoint(artifact, " (rl.verl.merge=false leaves only the FSDP checkpoint: convert it "
                                        "with python -m verl.model_merger merge --backend fsdp)")
