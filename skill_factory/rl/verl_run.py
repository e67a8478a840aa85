"""verl GRPO: our settings as ``verl.trainer.main_ppo`` overrides, the pre-flight, the launch.

**Overrides.** ``overrides(cfg, paths)`` maps the ``rl`` block (what to train), the model
file's ``resources`` (how it fits: GPUs, micro-batches, rollout TP, memory share, offload)
and ``rl.verl`` (engine settings) to verl 0.9.1 keys, in a fixed order, then appends
``rl.verl.extra_overrides`` verbatim. The paper's release command maps as follows; where it
differs, it is because verl 0.9 reads other keys:

============================================  ================================================
release command                               ours (verl 0.9.1)
============================================  ================================================
reward_model.reward_manager=batch             reward.reward_manager.name=naive
custom_reward_function.path / .name           reward.custom_reward_function.path / .name
  (compute_score_batch)                         (compute_score: the naive manager's per-sample
                                                call; the old keys compose but are ignored)
algorithm.kl_ctrl.kl_coef=0.001               rl.kl_mechanism says which mechanism gets rl.kl_coef:
  (inert: KL-in-reward is off)                  loss -> actor.use_kl_loss, kl_loss_coef, kl_loss_type
                                                reward -> algorithm.use_kl_in_reward, kl_ctrl.kl_coef
critic.* (GRPO has no critic)                 omitted (set only for adv_estimator=gae)
hydra.run.dir / output_subdir / job.chdir     same, on the command line only (not composed)
============================================  ================================================

**Pre-flight** (``preflight``): verl's packaged ``ppo_trainer`` config composed with our
overrides through Hydra's compose API in-process (a misspelled key fails here, attributed to
``rl.verl.extra_overrides`` or to our mapping), verl's own ``validate_config`` on the result,
then our value checks: the advantage estimator is registered, batch sizes divide over the
GPUs as verl's workers split them, the reward manager resolves and the reward file exports
the named function with the signature that manager calls, the data files exist and hold
verl's columns (and their prompts fit ``max_prompt_length`` when the tokenizer is at hand),
and the model path resolves. Problems are gathered and raised together.

**Launch**: ``python -m verl.trainer.main_ppo <overrides>`` as a subprocess with streamed
logs. Several nodes run on a Ray cluster: ``trainer.nnodes`` from the settings and
``RAY_ADDRESS`` from ``rl.verl.ray_address``, else ``RAY_ADDRESS`` in the environment, else
the first host of the Slurm allocation at ``rl.verl.ray_port`` (``launch/slurm_verl.sbatch``
starts that cluster). **Handoff**: the final FSDP checkpoint
(``checkpoints/global_step_<last>/actor``) is converted to a Hugging Face folder with
``python -m verl.model_merger merge --backend fsdp``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from skill_factory.config.problems import Problems
from skill_factory.errors import SkillFactoryError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
LOG_FILE = "verl.log"
TRACKER_FILE = "latest_checkpointed_iteration.txt"
MAIN = "verl.trainer.main_ppo"
MERGER = "verl.model_merger"
# verl reward managers calling the custom function once per sample (0.9 reward loop)
PER_SAMPLE_MANAGERS = ("naive", "dapo", "gdpo", "rate_limited", "remote")
REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


def verl_config_dir() -> str:
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


# --- settings --------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    """``model.resources`` merged with ``rl.verl``'s node/GPU overrides: how the run fits."""

    nnodes: int
    gpus_per_node: int
    micro_batch_per_gpu: int
    log_prob_micro_batch_per_gpu: int
    rollout_tensor_parallel_size: int
    rollout_gpu_memory_utilization: float
    param_offload: bool
    optimizer_offload: bool
    ref_param_offload: bool

    @property
    def world(self) -> int:
        return self.nnodes * self.gpus_per_node


def resources(cfg) -> Resources:
    r, v = cfg.model.resources, cfg.rl.verl
    return Resources(v.nnodes if v.nnodes is not None else r.nnodes,
                     v.gpus_per_node if v.gpus_per_node is not None else r.gpus_per_node,
                     r.rl_micro_batch_per_gpu, r.rl_log_prob_micro_batch_per_gpu, r.rollout_tensor_parallel_size,
                     r.rollout_gpu_memory_utilization, r.param_offload, r.optimizer_offload, r.ref_param_offload)


@dataclass(frozen=True)
class Paths:
    """Where the run reads and writes (absolute)."""

    model: str
    train_file: str
    val_file: Optional[str]
    checkpoint_dir: str
    reward_file: str
    hydra_dir: str


def _value(v: Any) -> str:
    """A value in Hydra's override grammar."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    s = str(v)
    if s and all(c.isalnum() or c in "/._-+:~@" for c in s) and not s[0] in "+~":
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _kv(key: str, value: Any) -> str:
    return f"{key}={_value(value)}"


def overrides(cfg, paths: Paths, *, experiment_name: str, loggers: Sequence[str]) -> list[str]:
    """verl overrides for one run, ours first, then ``rl.verl.extra_overrides`` verbatim."""
    rl, v = cfg.rl, cfg.rl.verl
    res = resources(cfg)
    aro = "actor_rollout_ref"
    out = [
        # algorithm and KL (the mechanism is explicit; the other one is switched off)
        _kv("algorithm.adv_estimator", rl.adv_estimator),
        _kv("algorithm.use_kl_in_reward", rl.kl_mechanism == "reward"),
        _kv(f"{aro}.actor.use_kl_loss", rl.kl_mechanism == "loss"),
    ]
    if rl.kl_mechanism == "loss":
        out += [_kv(f"{aro}.actor.kl_loss_coef", rl.kl_coef), _kv(f"{aro}.actor.kl_loss_type", v.kl_estimator)]
    elif rl.kl_mechanism == "reward":
        out += [_kv("algorithm.kl_ctrl.kl_coef", rl.kl_coef), _kv("algorithm.kl_penalty", v.kl_estimator)]
    out += [
        # data
        _kv("data.train_files", paths.train_file),
        _kv("data.val_files", paths.val_file or paths.train_file),
        _kv("data.train_batch_size", rl.train_batch_size),
        _kv("data.max_prompt_length", rl.max_prompt_length),
        _kv("data.max_response_length", rl.max_response_length),
        _kv("data.seed", cfg.seed),
    ]
    # the model's chat-template variables, for verl's RLHFDataset and rollout agent loop
    # (verl's config has an empty dict there: each key is added with '+')
    out += [_kv(f"+data.apply_chat_template_kwargs.{k}", val)
            for k, val in sorted(cfg.model.chat_template_kwargs.items())]
    out += [
        # policy model
        _kv(f"{aro}.model.path", paths.model),
        _kv(f"{aro}.model.trust_remote_code", cfg.model.trust_remote_code),
        _kv(f"{aro}.model.enable_gradient_checkpointing", v.gradient_checkpointing),
        _kv(f"{aro}.model.enable_activation_offload", v.activation_offload),
        _kv(f"{aro}.model.use_remove_padding", v.remove_padding),
        # actor optimisation
        _kv(f"{aro}.actor.strategy", v.strategy),
        _kv(f"{aro}.actor.optim.lr", rl.learning_rate),
        _kv(f"{aro}.actor.ppo_mini_batch_size", rl.ppo_mini_batch_size),
        _kv(f"{aro}.actor.ppo_micro_batch_size_per_gpu", res.micro_batch_per_gpu),
        _kv(f"{aro}.actor.fsdp_config.param_offload", res.param_offload),
        _kv(f"{aro}.actor.fsdp_config.optimizer_offload", res.optimizer_offload),
        _kv(f"{aro}.actor.fsdp_config.forward_prefetch", v.forward_prefetch),
        # reference policy (log-probabilities for the KL term)
        _kv(f"{aro}.ref.log_prob_micro_batch_size_per_gpu", res.log_prob_micro_batch_per_gpu),
        _kv(f"{aro}.ref.fsdp_config.param_offload", res.ref_param_offload),
        _kv(f"{aro}.ref.fsdp_config.forward_prefetch", v.forward_prefetch),
        # rollouts
        _kv(f"{aro}.rollout.name", v.rollout_engine),
        _kv(f"{aro}.rollout.n", rl.rollout_n),
        _kv(f"{aro}.rollout.temperature", rl.temperature),
        _kv(f"{aro}.rollout.top_p", rl.top_p),
        _kv(f"{aro}.rollout.dtype", v.rollout_dtype),
        _kv(f"{aro}.rollout.tensor_model_parallel_size", res.rollout_tensor_parallel_size),
        _kv(f"{aro}.rollout.gpu_memory_utilization", res.rollout_gpu_memory_utilization),
        _kv(f"{aro}.rollout.log_prob_micro_batch_size_per_gpu", res.log_prob_micro_batch_per_gpu),
        _kv(f"{aro}.rollout.max_num_batched_tokens", v.max_num_batched_tokens),
        _kv(f"{aro}.rollout.max_num_seqs", v.max_num_seqs),
    ]
    if rl.adv_estimator == "gae":  # the only estimator with a critic: it starts from the policy
        out += [_kv("critic.model.path", paths.model),
                _kv("critic.model.trust_remote_code", cfg.model.trust_remote_code),
                _kv("critic.ppo_micro_batch_size_per_gpu", res.micro_batch_per_gpu)]
    out += [
        # reward: verl 0.9 keys
        _kv("reward.reward_manager.name", v.reward_manager),
        _kv("reward.custom_reward_function.path", paths.reward_file),
        _kv("reward.custom_reward_function.name", v.reward_function),
    ]
    out += [_kv(f"+reward.custom_reward_function.reward_kwargs.{k}", val)
            for k, val in sorted(cfg.rl.reward_kwargs.items())]
    out += [
        # trainer
        _kv("trainer.total_epochs", rl.total_epochs),
        _kv("trainer.save_freq", v.save_freq),
        _kv("trainer.max_actor_ckpt_to_keep", v.max_checkpoints),
        _kv("trainer.test_freq", v.test_freq),
        _kv("trainer.val_before_train", v.val_before_train),
        _kv("trainer.logger", list(loggers)),
        _kv("trainer.project_name", cfg.logger.wandb.project),
        _kv("trainer.experiment_name", experiment_name),
        _kv("trainer.nnodes", res.nnodes),
        _kv("trainer.n_gpus_per_node", res.gpus_per_node),
        _kv("trainer.default_local_dir", paths.checkpoint_dir),
        _kv("trainer.resume_mode", "auto"),
    ]
    return out + list(v.extra_overrides)


def hydra_overrides(paths: Paths) -> list[str]:
    """Hydra's own settings for the subprocess: its outputs inside the artifact, no chdir."""
    return [_kv("hydra.run.dir", paths.hydra_dir), "hydra.output_subdir=null", "hydra.job.chdir=false"]


# --- compose (the engine's own check) ---------------------------------------------------

def compose_ppo_trainer(overrides_: Sequence[str]):
    """verl's packaged ``ppo_trainer`` config with ``overrides_``, composed in-process.

    Works inside a running Hydra app (the ``skillfactory`` entrypoint): the global Hydra
    state and version base are saved, replaced for the compose, and restored.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    saved = Singleton._instances.pop(GlobalHydra, None)
    saved_version = VersionBase.instance().getbase()
    try:
        with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
            return compose("ppo_trainer", overrides=list(overrides_))
    finally:
        Singleton._instances.pop(GlobalHydra, None)
        if saved is not None:
            Singleton._instances[GlobalHydra] = saved
        VersionBase.instance().setbase(saved_version)


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def _blame(message: str, ours: Sequence[str], extra: Sequence[str]) -> tuple[str, str]:
    """(config key to blame, the override) for a compose error naming a key."""
    for item in extra:
        key = _override_key(item)
        if f"'{key}'" in message or f"'{item}'" in message:
            return f"rl.verl.extra_overrides[{list(extra).index(item)}]", item
    for item in ours:
        key = _override_key(item)
        if f"'{key}'" in message or f"'{item}'" in message:
            return "rl", item
    return "rl.verl.extra_overrides", ""


# --- pre-flight -------------------------------------------------------------------------

def _batch_problems(cfg, res: Resources, p: Problems) -> None:
    """verl's batch split: rollout batch and mini-batch over the GPUs, micro-batches within."""
    rl = cfg.rl
    world = res.world
    total = rl.train_batch_size * rl.rollout_n
    if world < 1:
        return
    if total % world:
        p.add("rl.train_batch_size", f"{rl.train_batch_size} prompts x rl.rollout_n={rl.rollout_n} = {total} "
              f"sequences do not split over {world} GPUs ({res.nnodes} node(s) x {res.gpus_per_node})",
              "choose a batch whose prompts x rollout_n is a multiple of the GPU count")
    mini = rl.ppo_mini_batch_size * rl.rollout_n
    if mini % world:
        p.add("rl.ppo_mini_batch_size", f"{rl.ppo_mini_batch_size} prompts x rl.rollout_n={rl.rollout_n} = {mini} "
              f"sequences do not split over {world} GPUs", "choose a mini-batch whose prompts x rollout_n is a "
              "multiple of the GPU count")
    elif (mini // world) % res.micro_batch_per_gpu:
        p.add("model.resources.rl_micro_batch_per_gpu", f"{res.micro_batch_per_gpu} does not divide the "
              f"{mini // world} sequences each GPU gets per mini-batch", "use a divisor, e.g. 1")
    if res.gpus_per_node % res.rollout_tensor_parallel_size:
        p.add("model.resources.rollout_tensor_parallel_size", f"{res.rollout_tensor_parallel_size} does not divide "
              f"the {res.gpus_per_node} GPUs of a node", "use a divisor of the GPUs per node")
    if rl.train_batch_size < rl.ppo_mini_batch_size:
        p.add("rl.ppo_mini_batch_size", f"{rl.ppo_mini_batch_size} is larger than rl.train_batch_size="
              f"{rl.train_batch_size}", "use a mini-batch no larger than the batch")


def static_problems(cfg, p: Problems) -> None:
    """verl checks needing no verl import and no files of the run (the stage's validate hook)."""
    res = resources(cfg)
    _batch_problems(cfg, res, p)
    if res.nnodes > 1 and not cfg.rl.dry_run:
        try:
            ray_address(cfg, res)
        except SkillFactoryError as exc:
            p.add("rl.verl.ray_address", str(exc).removeprefix("rl.verl.ray_address: "),
                  "run inside `sbatch --nodes=N launch/slurm_verl.sbatch`, or set rl.verl.ray_address=<head>:<port>")


def _model_problem(path: str, dry_run: bool) -> tuple[Optional[str], str]:
    """(problem or None, how the path resolved) for the policy's starting checkpoint."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            return f"{path} is not a Hugging Face model folder (no config.json)", "local"
        return None, "local folder"
    looks_hub = path.count("/") == 1 and not path.startswith((".", "/", "~"))
    if not looks_hub:
        return f"no such folder: {path}", "missing"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        cached = None
    if isinstance(cached, str):
        return None, "hub id, in the local Hugging Face cache"
    if dry_run:
        return None, "hub id, not in the local cache (the training machine downloads it)"
    from skill_factory import rawdata

    if rawdata.hub_reachable():
        return None, "hub id (the Hub is reachable)"
    return f"'{path}' is neither a local folder nor in the Hugging Face cache, and the Hub cannot be reached", "missing"


def _data_problems(cfg, paths: Paths, p: Problems, report: dict) -> None:
    import pyarrow.parquet as pq

    for key, file in (("train", paths.train_file), ("val", paths.val_file)):
        if file is None:
            continue
        if not Path(file).is_file():
            p.add(f"rl.data.{key}", f"data file not found: {file}", "the rl stage writes it; rerun the stage")
            continue
        names = pq.read_schema(file).names
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            p.add(f"rl.data.{key}", f"{file} lacks verl's column(s) {', '.join(missing)}", "rewrite the data")
    if not Path(paths.model).is_dir() or not Path(paths.train_file).is_file():
        report["prompt_tokens_max"] = None
        return
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(paths.model, trust_remote_code=cfg.model.trust_remote_code)
        from skill_factory.rl.data import prompt_token_lengths

        longest = max(prompt_token_lengths(Path(paths.train_file), tok, dict(cfg.model.chat_template_kwargs)))
    except Exception as exc:  # noqa: BLE001 - the length check is best effort; verl checks again
        log.warning("rl pre-flight: prompt lengths not measured (%s)", exc)
        report["prompt_tokens_max"] = None
        return
    report["prompt_tokens_max"] = longest
    if longest > cfg.rl.max_prompt_length:
        p.add("rl.max_prompt_length", f"the longest rendered prompt has {longest} tokens, more than "
              f"{cfg.rl.max_prompt_length} (verl fails on it: data.truncation=error)", f"set rl.max_prompt_length "
              f"to {longest} or more")


class _Skip(Exception):
    pass


def preflight(cfg, ovr: Sequence[str], paths: Paths, *, dry_run: bool, planned_model: bool = False) -> dict:
    """Everything that can be checked before launching; returns a report, raises all problems at once.

    ``planned_model``: the model is the checkpoint an sft dry run plans (a dry run after a dry
    run), which cannot exist yet; its path is then not checked.
    """
    from skill_factory.rl.reward import BATCH_ARGS, PER_SAMPLE_ARGS, accepts

    p = Problems()
    report: dict[str, Any] = {"checks": []}
    extra = list(cfg.rl.verl.extra_overrides)
    ours = [o for o in ovr if o not in extra]
    composed = None
    try:
        composed = compose_ppo_trainer(ovr)
        report["checks"].append("compose")
    except Exception as exc:  # noqa: BLE001 - Hydra raises several kinds; all mean "not composable"
        message = " ".join(str(exc).split())
        key, item = _blame(message, ours, extra)
        fix = (f"check the key against verl's config ({verl_config_dir()}/_generated_ppo_trainer.yaml); "
               "prefix '+' to add a key verl's config lacks") if key.startswith("rl.verl.extra") else \
            "this override comes from our mapping: report it, or override the key in rl.verl.extra_overrides"
        p.add(key, f"verl's ppo_trainer config rejects '{item}': {message}" if item else
              f"verl's ppo_trainer config does not compose: {message}", fix)
    res = resources(cfg)
    _batch_problems(cfg, res, p)
    batches_ok = not p
    if composed is not None:
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config

        sink = io.StringIO()
        try:  # verl's own checks; a backstop for what ours miss (ours name the setting to fix)
            if not batches_ok:
                raise _Skip
            import warnings

            with contextlib.redirect_stdout(sink), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                validate_config(composed, use_reference_policy=need_reference_policy(composed),
                                use_critic=need_critic(composed))
            report["checks"].append("verl validate_config")
        except _Skip:
            pass
        except (AssertionError, ValueError, TypeError, KeyError) as exc:
            p.add("rl", f"verl's own config check fails: {exc}", "fix the setting it names (rl.*, model.resources.*, "
                  "or rl.verl.extra_overrides)")
        for line in sink.getvalue().splitlines():
            if line.strip():
                log.debug("verl validate_config: %s", line)
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

        est = composed.algorithm.adv_estimator
        if est not in ADV_ESTIMATOR_REGISTRY:
            p.add("rl.adv_estimator", f"'{est}' is not a verl advantage estimator",
                  f"use one of {', '.join(sorted(ADV_ESTIMATOR_REGISTRY))}")
        else:
            report["checks"].append("adv_estimator")
        manager = composed.reward.reward_manager.name
        try:
            from verl.trainer.ppo.reward import resolve_reward_manager_cls

            resolve_reward_manager_cls(composed)
            report["checks"].append("reward manager")
        except Exception as exc:  # noqa: BLE001 - any failure means the name does not resolve
            p.add("rl.verl.reward_manager", f"verl cannot resolve reward manager '{manager}': {exc}",
                  f"use one of {', '.join(PER_SAMPLE_MANAGERS)}")
        try:
            from verl.trainer.ppo.reward import get_custom_reward_fn

            fn = get_custom_reward_fn(composed)
        except (FileNotFoundError, AttributeError, ImportError, RuntimeError) as exc:
            fn = None
            p.add("rl.verl.reward_function", f"verl cannot load '{cfg.rl.verl.reward_function}' from "
                  f"{paths.reward_file}: {exc}", "name a function the reward file defines")
        if fn is not None:
            # verl wraps the function: partial(_call_with_kwargs, raw_fn, reward_kwargs)
            target = fn.args[0] if getattr(fn, "args", None) and callable(fn.args[0]) else fn
            needed = PER_SAMPLE_ARGS if manager in PER_SAMPLE_MANAGERS else BATCH_ARGS
            if not accepts(target, needed):
                p.add("rl.verl.reward_function", f"'{cfg.rl.verl.reward_function}' cannot take the arguments the "
                      f"'{manager}' reward manager passes ({', '.join(needed)})",
                      "use compute_score with per-sample managers (naive), compute_score_batch with batch")
            else:
                report["checks"].append("reward function")
    _data_problems(cfg, paths, p, report)
    problem, how = (None, "planned by the sft dry run (not checked)") if planned_model else \
        _model_problem(paths.model, dry_run)
    report["model"] = how
    if problem:
        p.add("rl.init_checkpoint", problem, "point rl.init_checkpoint at a Hugging Face model folder or hub id")
    if not dry_run:
        _machine_problems(cfg, res, p, report)
    p.raise_if_any()
    report["checks"] += ["batch sizes", "data files", "model path"]
    return report


def _machine_problems(cfg, res: Resources, p: Problems, report: dict) -> None:
    """What a real launch needs on this machine: GPUs, the rollout engine, the Ray head."""
    import importlib.util

    try:
        import torch

        have = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable torch means no GPU
        have = 0
    if have < res.gpus_per_node:
        p.add("rl.backend", f"verl trains on GPUs: {res.gpus_per_node} per node needed, this machine has {have}",
              "use rl=trl_grpo on a CPU, rl.dry_run=true to only write and check the launch, or "
              "rl.verl.gpus_per_node to match the machine")
    engine = cfg.rl.verl.rollout_engine
    if importlib.util.find_spec(engine) is None:
        p.add("rl.verl.rollout_engine", f"the rollout engine '{engine}' is not installed here",
              "install the gpu extra (bash launch/setup.sh on a GPU machine) or use rl.dry_run=true")
    if res.nnodes > 1:
        try:
            address = ray_address(cfg, res)
        except SkillFactoryError:
            return  # reported by the stage's static checks
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                report["ray_head"] = "reachable"
        except (OSError, ValueError) as exc:
            p.add("rl.verl.ray_address", f"no Ray head answers at {address} ({exc})",
                  "start the cluster first (ray start --head; see launch/slurm_verl.sbatch)")


# --- launch --------------------------------------------------------------------------------

@dataclass
class Command:
    """A command plus the variables added to the inherited environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"argv": list(self.argv), "env": dict(self.env), "command": shlex.join(self.argv)}


def ray_address(cfg, res: Resources, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The Ray head "host:port" verl connects to (None: one node, verl starts a local Ray)."""
    from skill_factory.llamafactory.launch import slurm_allocation

    environ = os.environ if environ is None else environ
    v = cfg.rl.verl
    if v.ray_address:
        return v.ray_address
    if res.nnodes == 1:
        return None
    if environ.get("RAY_ADDRESS"):
        return environ["RAY_ADDRESS"]
    alloc = slurm_allocation(environ)
    if alloc is not None and alloc["nnodes"] >= res.nnodes and alloc["hosts"]:
        return f"{alloc['hosts'][0]}:{v.ray_port}"
    where = (f"this Slurm job has {alloc['nnodes']} node(s), fewer than {res.nnodes}" if alloc
             else "not inside a Slurm allocation, and RAY_ADDRESS is not set")
    raise SkillFactoryError(f"rl.verl.ray_address: {res.nnodes}-node training needs a Ray cluster ({where})")


def launch_env(cfg, address: Optional[str]) -> dict[str, str]:
    env = {"HYDRA_FULL_ERROR": "1"}
    if address:
        env["RAY_ADDRESS"] = address
    if cfg.logger.name == "wandb":
        w = cfg.logger.wandb
        env["WANDB_MODE"] = w.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        if w.entity:
            env["WANDB_ENTITY"] = w.entity
        if cfg.paths.run_dir:
            env["WANDB_DIR"] = str(cfg.paths.run_dir)
    return env


def train_command(ovr: Sequence[str], hydra_ovr: Sequence[str], env: Mapping[str, str],
                  python: Optional[str] = None) -> Command:
    return Command([python or sys.executable, "-m", MAIN, *ovr, *hydra_ovr], dict(env))


def merge_command(actor_dir: str, target_dir: str, trust_remote_code: bool = False,
                  python: Optional[str] = None) -> Command:
    argv = [python or sys.executable, "-m", MERGER, "merge", "--backend", "fsdp", "--local_dir", actor_dir,
            "--target_dir", target_dir]
    if trust_remote_code:
        argv.append("--trust-remote-code")
    return Command(argv)


def launch_script(train: Command, checkpoint_dir: str, target_dir: Optional[str],
                  trust_remote_code: bool = False, python: Optional[str] = None, require_ray: bool = False) -> str:
    """``launch.sh``: the exact training command, then (``target_dir``) the merger handoff.

    ``require_ray``: a multi-node launch written where no Ray head was known (a dry run
    outside the cluster); the script then stops unless ``RAY_ADDRESS`` is set when it runs.
    """
    lines = ["#!/usr/bin/env bash",
             "# Written by skill-factory's rl stage: the exact verl GRPO launch, then the handoff that",
             "# converts the last FSDP checkpoint to a Hugging Face folder (what the eval stage loads).",
             "# Several nodes: run it on the head node of a running Ray cluster (launch/slurm_verl.sbatch).",
             "set -euo pipefail"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in train.env.items()]
    if require_ray:
        lines.append('export RAY_ADDRESS="${RAY_ADDRESS:?set RAY_ADDRESS to the Ray head host:port}"')
    head, rest = train.argv[:3], train.argv[3:]  # python -m verl.trainer.main_ppo, then one override a line
    lines.append(" \\\n    ".join([shlex.join(head), *(shlex.quote(a) for a in rest)]))
    if target_dir:
        merge = merge_command(f"{checkpoint_dir}/global_step_${{step}}/actor", target_dir, trust_remote_code, python)
        lines.append(f"step=$(cat {shlex.quote(checkpoint_dir + '/' + TRACKER_FILE)})")
        lines.append(" ".join(f'"{a}"' if "${step}" in a else shlex.quote(a) for a in merge.argv))
    return "\n".join(lines) + "\n"


def last_checkpoint(checkpoint_dir: Path) -> tuple[int, Path]:
    """(step, actor folder) of the newest checkpoint verl recorded."""
    tracker = checkpoint_dir / TRACKER_FILE
    if not tracker.is_file():
        raise SkillFactoryError(f"rl: verl finished but wrote no checkpoint ({tracker} is missing); "
                                "rl.verl.save_freq must be >= 1")
    step = int(tracker.read_text().strip())
    actor = checkpoint_dir / f"global_step_{step}" / "actor"
    if not actor.is_dir():
        raise SkillFactoryError(f"rl: verl's tracker names step {step}, but {actor} is missing")
    return step, actor


def metrics_from_log(text: str, keys: Sequence[str] = ("critic/score/mean", "critic/rewards/mean",
                                                        "response_length/mean", "actor/kl_loss")) -> dict:
    """verl's console metric lines (``step:N - key:value - …``) as per-key curves."""
    curves: dict[str, list] = {k: [] for k in keys}
    val: list = []
    for line in text.splitlines():
        i = line.find("step:")
        if i < 0:
            continue
        parts = line[i:].split(" - ")
        try:
            step = int(parts[0].split(":", 1)[1])
        except (ValueError, IndexError):
            continue
        for part in parts[1:]:
            name, _, value = part.rpartition(":")
            try:
                number = float(value)
            except ValueError:
                continue
            if name in curves:
                curves[name].append([step, number])
            elif name.startswith("val-core/") and "reward/mean" in name:
                val.append([step, name, number])
    out = {k: {"first": c[0][1], "last": c[-1][1], "points": len(c), "curve": c[-20:]} for k, c in curves.items() if c}
    if val:
        out["val"] = val[-20:]
    out["steps"] = max((c[-1][0] for c in curves.values() if c), default=0)
    return out


def settings_summary(cfg) -> dict:
    return {"resources": asdict(resources(cfg)), "kl_mechanism": cfg.rl.kl_mechanism, "kl_coef": cfg.rl.kl_coef}
