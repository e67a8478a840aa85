"""sft: supervised fine-tuning on the silver traces with LLaMA-Factory.

    skillfactory stages=[sft]                                     # the tiny model on CPU (sft=cpu)
    skillfactory model=qwen2_5_1_5b_instruct stages=[sft]         # the paper's setting (sft=paper_full)
    skillfactory model=qwen2_5_1_5b_instruct sft.dataset=traces.parquet sft.dry_run=true stages=[sft]
    skillfactory stages=[sft] sft.dataset=SkillFactory/SFT-... # bring your own ShareGPT data

What it does, in order, all inside the stage's artifact directory:

1. **data**: the traces artifact (or ``sft.dataset``: a local parquet / jsonl / json file or
   folder, or a hub id) is read, every conversation checked, and written as
   ``data/train.parquet`` in one ShareGPT layout (``skill_factory.llamafactory.emit``).
   ``dataset_info.json`` holds its entry (``skillfactory_sft``); merge it into your own
   LLaMA-Factory checkout with ``python -m skill_factory.llamafactory merge-dataset-info
   <artifact> <checkout>/data/dataset_info.json``.
2. **yaml**: ``train.yaml``, a complete LLaMA-Factory config: the preset (``conf/sft/``)
   merged with the model's resources (``model.resources``: values the preset leaves null),
   the model's template (left out when ``model.template`` is null: LLaMA-Factory then parses
   the tokenizer's own chat template) and ``default_system``, and the DeepSpeed json copied
   next to it (``ds_config.json``). LoRA runs also get ``export.yaml``, which merges the adapter.
3. **launch**: ``launch.sh`` / ``launch.json``: the exact command and the environment
   variables added (``skill_factory.llamafactory.launch``: CPU, GPUs, nodes, Slurm).
4. **pre-flight**: LLaMA-Factory's own parser, dataset resolution and template check on
   those files, in-process (``skill_factory.llamafactory.preflight``); one clear error.
5. **train**: ``llamafactory-cli train train.yaml`` as a subprocess, its output streamed
   with a ``[llamafactory]`` prefix and kept in ``llamafactory.log``.

The manifest counts give ``checkpoint`` (the folder the rl and eval stages load: use
``sft_checkpoint(artifact)``), the training loss (first, last, min and a short curve),
steps, tokens/s, the rows per trace format, the command and the pre-flight report.

Why ``dry_run`` is part of the fingerprint: the runner marks an artifact finished by its
manifest, and a later real run must never reuse a directory that holds no checkpoint. So a
dry run is its own artifact (files, command, pre-flight report, ``dry_run: true`` in the
counts; ``sft_checkpoint`` refuses it), and the real run of the same settings trains in a
directory of its own. The launch location (``node_rank``, ``master_addr``, ``master_port``,
``cpu_threads``) and ``strict_template`` are not part of the fingerprint: they change where
and how the same training runs, not what it produces; the node and GPU counts are (they set
the global batch).

Why the stage starts over when killed (not resumable): the paper saves the model only (no
optimizer state), from which training cannot resume exactly; LLaMA-Factory's own
auto-resume is switched off (``overwrite_output_dir``) so a half-finished folder is never
mistaken for a starting point.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from skill_factory.config.schema import SFTConfig
from skill_factory.errors import SkillFactoryError
from skill_factory.llamafactory.emit import SettingError
from skill_factory.models import base_model_path, check_model, model_upstream
from skill_factory.pipeline import stage

log = logging.getLogger(__name__)

DEEPSPEED_DIR = Path(__file__).resolve().parents[2] / "conf" / "deepspeed"
MODEL_DIR = "model"          # LLaMA-Factory's output_dir: the final weights (or the LoRA adapter)
MERGED_DIR = "merged"        # LoRA runs: the adapter merged into the base model
LOG_FILE = "llamafactory.log"
DS_FILE = "ds_config.json"
EXPORT_YAML = "export.yaml"

# where and how to run, not what is trained: kept out of the fingerprint
LAUNCH_ONLY = ("node_rank", "master_addr", "master_port", "cpu_threads", "strict_template")
MODEL_KEYS = ("model.name", "model.path", "model.template", "model.default_system", "model.trust_remote_code",
              "model.resources.nnodes", "model.resources.gpus_per_node", "model.resources.sft_per_device_batch",
              "model.resources.sft_gradient_accumulation", "model.resources.sft_cutoff_len",
              "model.resources.zero_stage")
CONFIG_KEYS = (*(f"sft.{f.name}" for f in fields(SFTConfig) if f.name not in LAUNCH_ONLY),
               "sft.dataset_identity", *MODEL_KEYS, "seed")
# yaml keys our settings write; sft.extra may not override them (it would bypass the setting)
MANAGED_KEYS = {
    "model_name_or_path": "model.path", "trust_remote_code": "model.trust_remote_code",
    "stage": None, "do_train": None, "finetuning_type": "sft.finetuning_type",
    "deepspeed": "sft.zero_stage / sft.deepspeed", "dataset": "sft.dataset", "dataset_dir": "sft.dataset",
    "template": "model.template", "default_system": "model.default_system", "cutoff_len": "sft.cutoff_len",
    "max_samples": "sft.max_samples", "output_dir": None, "overwrite_output_dir": None,
    "report_to": "logger", "run_name": None, "logging_steps": "sft.logging_steps",
    "save_strategy": "sft.save_steps", "save_steps": "sft.save_steps", "save_only_model": "sft.save_only_model",
    "save_total_limit": "sft.save_total_limit", "plot_loss": "sft.plot_loss",
    "per_device_train_batch_size": "sft.per_device_train_batch_size",
    "gradient_accumulation_steps": "sft.gradient_accumulation_steps", "learning_rate": "sft.learning_rate",
    "num_train_epochs": "sft.num_train_epochs", "max_steps": "sft.max_steps",
    "lr_scheduler_type": "sft.lr_scheduler_type", "warmup_steps": "sft.warmup_ratio",
    "warmup_ratio": "sft.warmup_ratio", "weight_decay": "sft.weight_decay", "adam_beta1": "sft.adam_beta1",
    "adam_beta2": "sft.adam_beta2", "bf16": "sft.bf16", "use_cpu": "sft.use_cpu",
    "gradient_checkpointing": "sft.gradient_checkpointing",
    "disable_gradient_checkpointing": "sft.gradient_checkpointing", "seed": "seed",
    "lora_rank": "sft.lora_rank", "lora_alpha": "sft.lora_alpha", "lora_dropout": "sft.lora_dropout",
    "lora_target": "sft.lora_target", "include_effective_tokens_per_second": None,
}
YAML_HEADER = """\
# LLaMA-Factory 0.9.5 SFT config, written by skill-factory's sft stage (skill_factory/stages/sft.py).
# Run it with launch.sh next to this file. Compared with the SkillFactory release's
# examples/llamafactory_sft_example.yaml: no enable_masked_ranges (stock LLaMA-Factory rejects the
# key), warmup_ratio written as warmup_steps (a float < 1 is a ratio; transformers 5 deprecates
# warmup_ratio), and trust_remote_code from the model file. Gradient checkpointing, when off, is
# written as disable_gradient_checkpointing (LLaMA-Factory turns it on by itself).
"""


@dataclass(frozen=True)
class Settings:
    """The preset merged with the model's resources: what one training run uses."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    cutoff_len: int
    zero_stage: int
    # a DeepSpeed json to copy into the artifact (ours for zero_stage, or sft.deepspeed)
    deepspeed: Optional[str]
    nnodes: int
    gpus_per_node: int

    @property
    def global_batch(self) -> int:
        procs = 1 if self.gpus_per_node < 1 else self.nnodes * self.gpus_per_node
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * procs


def settings(cfg) -> Settings:
    """``cfg.sft`` with its null values taken from ``cfg.model.resources``."""
    s, r = cfg.sft, cfg.model.resources

    def pick(value, default):
        return default if value is None else value

    zero = 0 if s.use_cpu and s.zero_stage is None else pick(s.zero_stage, r.zero_stage)
    deepspeed = s.deepspeed or (str(DEEPSPEED_DIR / f"ds_z{zero}.json") if zero else None)
    return Settings(pick(s.per_device_train_batch_size, r.sft_per_device_batch),
                    pick(s.gradient_accumulation_steps, r.sft_gradient_accumulation),
                    pick(s.cutoff_len, r.sft_cutoff_len), zero, deepspeed,
                    1 if s.use_cpu else pick(s.nnodes, r.nnodes),
                    0 if s.use_cpu else pick(s.gpus_per_node, r.gpus_per_node))


def _upstream(cfg) -> tuple[str, ...]:
    return (*(() if cfg.sft.dataset is not None else ("traces",)), *model_upstream(cfg))


# --- the yaml ----------------------------------------------------------------------------

def train_sections(cfg, st: Settings, *, model_path: str, dataset_dir: str, output_dir: str,
                   deepspeed: Optional[str], report_to: str, run_name: str) -> list[tuple[str, dict]]:
    """The LLaMA-Factory training arguments, in commented sections (see ``emit.render_yaml``)."""
    from skill_factory.llamafactory.emit import DATASET_NAME

    s, m = cfg.sft, cfg.model
    method: dict[str, Any] = {"stage": "sft", "do_train": True, "finetuning_type": s.finetuning_type}
    if s.finetuning_type == "lora":
        method.update(lora_rank=s.lora_rank, lora_alpha=s.lora_alpha or 2 * s.lora_rank,
                      lora_dropout=s.lora_dropout, lora_target=s.lora_target)
    if deepspeed:
        method["deepspeed"] = deepspeed
    data: dict[str, Any] = {"dataset": DATASET_NAME, "dataset_dir": dataset_dir}
    if m.template is not None:  # none: LLaMA-Factory parses the tokenizer's own chat template
        data["template"] = m.template
    if m.default_system is not None:
        data["default_system"] = m.default_system
    data["cutoff_len"] = st.cutoff_len
    if s.max_samples is not None:
        data["max_samples"] = s.max_samples
    data.update(overwrite_cache=True, preprocessing_num_workers=1, dataloader_num_workers=0)
    output: dict[str, Any] = {"output_dir": output_dir, "overwrite_output_dir": True,
                              "logging_steps": s.logging_steps,
                              "save_strategy": "steps" if s.save_steps else "no"}
    if s.save_steps:
        output["save_steps"] = s.save_steps
    output["save_only_model"] = s.save_only_model
    if s.save_total_limit is not None:
        output["save_total_limit"] = s.save_total_limit
    output.update(plot_loss=s.plot_loss, report_to=report_to, run_name=run_name)
    train: dict[str, Any] = {"per_device_train_batch_size": st.per_device_train_batch_size,
                             "gradient_accumulation_steps": st.gradient_accumulation_steps,
                             "learning_rate": s.learning_rate, "num_train_epochs": s.num_train_epochs}
    if s.max_steps is not None:
        train["max_steps"] = s.max_steps
    train.update(lr_scheduler_type=s.lr_scheduler_type, warmup_steps=s.warmup_ratio,
                 weight_decay=s.weight_decay, adam_beta1=s.adam_beta1, adam_beta2=s.adam_beta2, bf16=s.bf16)
    if s.use_cpu:
        train["use_cpu"] = True
    if s.gradient_checkpointing:
        train["gradient_checkpointing"] = True
    else:
        train["disable_gradient_checkpointing"] = True
    train.update(ddp_timeout=180000000, include_effective_tokens_per_second=True, seed=cfg.seed)
    sections = [("model", {"model_name_or_path": model_path, "trust_remote_code": m.trust_remote_code}),
                ("method", method), ("dataset", data), ("output", output), ("train", train)]
    if s.extra:
        sections.append(("extra (sft.extra)", dict(s.extra)))
    return sections


def export_args(cfg, *, model_path: str, adapter: str, export_dir: str) -> dict:
    """``llamafactory-cli export`` arguments that merge a LoRA adapter into its base model."""
    args = {"model_name_or_path": model_path, "adapter_name_or_path": adapter,
            "finetuning_type": "lora", "trust_remote_code": cfg.model.trust_remote_code,
            "export_dir": export_dir, "export_size": 5, "export_device": "cpu", "export_legacy_format": False}
    if cfg.model.template is not None:  # none: LLaMA-Factory parses the tokenizer's own chat template
        args["template"] = cfg.model.template
    if cfg.model.default_system is not None:
        args["default_system"] = cfg.model.default_system
    return args


def wandb_env(cfg) -> dict[str, str]:
    """W&B variables so LLaMA-Factory's run lands in this run's project and group.

    The group, project and entity are read from the W&B run this process has open (the
    tracker's), else from ``logger.wandb`` as the tracker would choose them.
    """
    import os
    import sys

    if cfg.logger.name != "wandb":
        return {}
    w = cfg.logger.wandb
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    env = {"WANDB_PROJECT": (run.project if run is not None else None) or w.project,
           "WANDB_RUN_GROUP": (run.group if run is not None else None) or w.group or "skillfactory",
           "WANDB_MODE": w.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")}
    entity = (run.entity if run is not None else None) or w.entity
    if entity:
        env["WANDB_ENTITY"] = entity
    if w.tags:
        env["WANDB_TAGS"] = ",".join(w.tags)
    if cfg.paths.run_dir:
        env["WANDB_DIR"] = str(cfg.paths.run_dir)
    return env


def launch_env(cfg) -> dict[str, str]:
    env = wandb_env(cfg)
    if cfg.sft.cpu_threads is not None:
        env.update(OMP_NUM_THREADS=str(cfg.sft.cpu_threads), MKL_NUM_THREADS=str(cfg.sft.cpu_threads))
    return env


def topology(cfg, st: Settings, environ=None):
    from skill_factory.llamafactory.launch import resolve_topology

    s = cfg.sft
    return resolve_topology(nnodes=st.nnodes, gpus_per_node=st.gpus_per_node, use_cpu=s.use_cpu,
                            deepspeed=st.deepspeed is not None, node_rank=s.node_rank, master_addr=s.master_addr,
                            master_port=s.master_port, environ=environ)


# --- checks ------------------------------------------------------------------------------

def _check(cfg, problems) -> None:
    import importlib.util

    from skill_factory import rawdata

    check_model(cfg, problems)
    s = cfg.sft
    st = settings(cfg)
    if st.cutoff_len > cfg.model.max_length:
        problems.add("sft.cutoff_len", f"{st.cutoff_len} is longer than model.max_length={cfg.model.max_length}",
                     "lower sft.cutoff_len (or model.resources.sft_cutoff_len)")
    if s.use_cpu and st.deepspeed:
        problems.add("sft.zero_stage", "DeepSpeed needs GPUs; sft.use_cpu=true", "set sft.zero_stage=0 and "
                     "sft.deepspeed=null, or train on GPUs")
    for key in sorted(set(s.extra) & set(MANAGED_KEYS)):
        owner = MANAGED_KEYS[key]
        problems.add(f"sft.extra.{key}", "is written by the sft stage itself",
                     f"use {owner}" if owner else "remove it (the stage owns this key)")
    if s.dataset is not None and s.dataset.strip() and rawdata.is_local_source(s.dataset):
        _check_local_dataset(s, problems)
    try:
        topo = topology(cfg, st)
    except SettingError as exc:
        problems.add(exc.key, exc.what, exc.fix)
        topo = None
    if s.dry_run or s.use_cpu:
        return
    if st.deepspeed and importlib.util.find_spec("deepspeed") is None:
        problems.add("sft.zero_stage", f"DeepSpeed ZeRO-{st.zero_stage} needs the deepspeed package, which is "
                     "not installed here", "pip install deepspeed on the training machine, set "
                     "sft.zero_stage=0, or sft.dry_run=true to only write the files")
    import torch

    have = torch.cuda.device_count()
    need = topo.nproc_per_node if topo is not None else st.gpus_per_node
    if have < max(need, 1):
        problems.add("sft.use_cpu", f"training on GPUs needs {max(need, 1)} per node; this machine has {have}",
                     "use sft=cpu for a model that trains on CPU, sft.dry_run=true to only write the files, "
                     "or sft.gpus_per_node to match the machine")


def _check_local_dataset(s, problems) -> None:
    from skill_factory import rawdata
    from skill_factory.llamafactory.emit import detect_layout, normalise

    if not Path(s.dataset).expanduser().exists():
        problems.add("sft.dataset", f"no such file or folder: {s.dataset}",
                     "point it at a ShareGPT parquet / jsonl / json file or folder, or a hub id")
        return
    try:
        table = rawdata.arrow_table(rawdata.load_raw_dataset(s.dataset, s.dataset_split, key="sft.dataset"))
        normalise(table, detect_layout(table, s.columns))
    except SettingError as exc:
        problems.add(exc.key, exc.what, exc.fix)
    except SkillFactoryError as exc:
        problems.add("sft.dataset", str(exc).removeprefix("sft.dataset: "), "check the dataset")


# --- the stage ------------------------------------------------------------------------------

def _load_source(cfg, inputs) -> tuple[Any, str]:
    """The training rows as a pyarrow Table, and a description of their origin."""
    from skill_factory import rawdata

    s = cfg.sft
    if s.dataset is None:
        if "traces" not in inputs:
            raise SkillFactoryError("sft.dataset: no traces artifact and no sft.dataset given")
        path = inputs["traces"].path
        return rawdata.arrow_table(rawdata.load_raw_dataset(str(path), "train", key="traces")), f"traces:{path}"
    if rawdata.is_local_source(s.dataset):
        ds = rawdata.load_raw_dataset(s.dataset, s.dataset_split, key="sft.dataset")
    else:
        ds = _load_hub(s)
    return rawdata.arrow_table(ds), s.dataset


def _hub_offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _load_hub(s):
    """A hub dataset (with its config name, which ``rawdata`` does not take), or one clear error."""
    import datasets

    from skill_factory import rawdata

    if not _hub_offline() and not rawdata.hub_reachable():
        raise SettingError("sft.dataset", f"'{s.dataset}' is not a local path, and the Hugging Face Hub cannot be "
                           "reached", f"download it where there is network (huggingface-cli download --repo-type "
                           f"dataset {s.dataset} --local-dir DIR) and set sft.dataset=DIR, or use sft.dry_run=true")
    try:
        return datasets.load_dataset(s.dataset, s.dataset_subset, split=s.dataset_split, revision=s.dataset_revision)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot load"
        raise SettingError("sft.dataset", f"cannot load hub dataset '{s.dataset}' (subset {s.dataset_subset}, split "
                           f"'{s.dataset_split}'): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                           "check the id, sft.dataset_subset and sft.dataset_split") from exc


def emit_data(cfg, inputs, out: Path) -> tuple[dict, dict]:
    """Write ``data/train.parquet`` (normalised) and return its dataset entry and statistics.

    A hub dataset that cannot be reached is only acceptable in a dry run: the entry then
    names the hub id and LLaMA-Factory would load it where it trains.
    """
    from skill_factory import rawdata
    from skill_factory.llamafactory.emit import (
        DATA_FILE,
        Layout,
        detect_layout,
        file_entry,
        hub_entry,
        normalise,
        write_parquet,
    )

    s = cfg.sft
    if (s.dry_run and s.dataset is not None and not rawdata.is_local_source(s.dataset)
            and (_hub_offline() or not rawdata.hub_reachable())):
        c = s.columns
        layout = Layout(c.messages or "conversations", c.role_tag or "role", c.content_tag or "content",
                        c.user_tag or "user", c.assistant_tag or "assistant", c.system_tag or "system")
        log.warning("sft: hub dataset %s cannot be reached; the dry run names it in dataset_info.json "
                    "unchecked (columns/tags from sft.columns or the role/content defaults)", s.dataset)
        entry = hub_entry(s.dataset, s.dataset_split, layout)
        if s.dataset_subset:
            entry["subset"] = s.dataset_subset
        return entry, {"source": s.dataset, "rows": None}
    table, source = _load_source(cfg, inputs)
    layout = detect_layout(table, s.columns, key="sft.dataset" if s.dataset else "traces")
    normalised, stats = normalise(table, layout, key="sft.dataset" if s.dataset else "traces")
    write_parquet(normalised, out / DATA_FILE)
    log.info("sft: %d conversations from %s -> %s", stats["rows"], source, out / DATA_FILE)
    return file_entry(DATA_FILE), {"source": source, **stats}


def _run_name(cfg, fingerprint: str) -> str:
    return f"{Path(cfg.paths.run_dir).name}-sft" if cfg.paths.run_dir else f"sft-{fingerprint}"


def write_files(cfg, st: Settings, inputs, out: Path, fingerprint: str) -> tuple[dict, Any]:
    """Everything LLaMA-Factory needs, under ``out``; returns (data stats, Launch)."""
    from skill_factory.llamafactory.emit import (
        DATASET_INFO,
        DATASET_NAME,
        TRAIN_YAML,
        render_yaml,
        write_json,
    )
    from skill_factory.llamafactory.launch import build_launch

    entry, data_stats = emit_data(cfg, inputs, out)
    write_json(out / DATASET_INFO, {DATASET_NAME: entry})
    deepspeed = None
    if st.deepspeed:
        shutil.copyfile(st.deepspeed, out / DS_FILE)
        deepspeed = str(out / DS_FILE)
    model_path = base_model_path(cfg, inputs)
    sections = train_sections(cfg, st, model_path=model_path, dataset_dir=str(out), output_dir=str(out / MODEL_DIR),
                              deepspeed=deepspeed, report_to="wandb" if cfg.logger.name == "wandb" else "none",
                              run_name=_run_name(cfg, fingerprint))
    (out / TRAIN_YAML).write_text(render_yaml(sections, header=YAML_HEADER))
    if cfg.sft.finetuning_type == "lora":
        import yaml

        args = export_args(cfg, model_path=model_path, adapter=str(out / MODEL_DIR), export_dir=str(out / MERGED_DIR))
        (out / EXPORT_YAML).write_text(yaml.safe_dump(args, sort_keys=False))
    launch = build_launch(out / TRAIN_YAML, topology(cfg, st), extra_env=launch_env(cfg))
    (out / "launch.sh").write_text(launch.shell())
    (out / "launch.sh").chmod(0o755)
    write_json(out / "launch.json", launch.as_dict())
    return data_stats, launch


def loss_summary(log_history: list[dict], points: int = 20) -> dict:
    """First, last, min and mean loss, and at most ``points`` (step, loss) pairs of the curve."""
    curve = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    if not curve:
        return {"points": 0}
    losses = [v for _, v in curve]
    stride = max(1, -(-len(curve) // points))
    sampled = curve[::stride]
    if sampled[-1] != curve[-1]:
        sampled.append(curve[-1])
    return {"first": round(losses[0], 4), "last": round(losses[-1], 4), "min": round(min(losses), 4),
            "mean": round(sum(losses) / len(losses), 4), "points": len(curve),
            "curve": [[s, round(v, 4)] for s, v in sampled]}


def read_results(model_dir: Path, world_size: int) -> dict:
    """Steps, loss curve and throughput from the files LLaMA-Factory leaves in ``output_dir``."""
    state = json.loads((model_dir / "trainer_state.json").read_text())
    results_file = model_dir / "train_results.json"
    metrics = json.loads(results_file.read_text()) if results_file.exists() else {}
    out = {"steps": int(state.get("global_step", 0)), "max_steps": int(state.get("max_steps", 0)),
           "epochs": metrics.get("epoch", state.get("epoch")), "train_loss": metrics.get("train_loss"),
           "loss": loss_summary(state.get("log_history", [])), "train_runtime_s": metrics.get("train_runtime"),
           "samples_per_second": metrics.get("train_samples_per_second")}
    tps = metrics.get("effective_tokens_per_sec")
    if tps is not None:  # LLaMA-Factory divides by the world size: per device
        out["tokens_per_second_per_device"] = round(float(tps), 1)
        out["tokens_per_second"] = round(float(tps) * max(world_size, 1), 1)
    return out


def _keep_failure(cfg, out: Path) -> Path:
    """Copy the small files of a failed attempt where the runner will not delete them."""
    base = Path(cfg.paths.run_dir) if cfg.paths.run_dir else out.parent
    keep = base / f"sft-failed-{out.name}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("train.yaml", EXPORT_YAML, "dataset_info.json", "launch.sh", "launch.json", LOG_FILE):
        if (out / name).exists():
            shutil.copyfile(out / name, keep / name)
    return keep


def _log_dry_run(out: Path, launch, files: dict) -> None:
    log.info("sft dry run: nothing was trained. Files in %s:", out)
    for name, path in files.items():
        log.info("  %-18s %s", name, path)
    env = " ".join(f"{k}={v}" for k, v in launch.env.items())
    log.info("sft dry run: environment added: %s", env or "(none)")
    log.info("sft dry run: command: %s", launch.as_dict()["command"])
    log.info("sft dry run: train.yaml:\n%s", (out / "train.yaml").read_text())


@stage("sft", config=CONFIG_KEYS, upstream=_upstream, check=_check)
def sft(ctx) -> dict:
    from skill_factory.llamafactory.launch import run_streamed
    from skill_factory.llamafactory.preflight import preflight

    cfg, out, s = ctx.cfg, ctx.out_dir, ctx.cfg.sft
    st = settings(cfg)
    data_stats, launch = write_files(cfg, st, ctx.inputs, out, ctx.fingerprint)
    export = out / EXPORT_YAML
    report = preflight(out / "train.yaml", local_files_only=s.dry_run, require_tokenizer=not s.dry_run,
                       strict_template=s.strict_template, export_yaml=export if export.exists() else None,
                       chat_template_kwargs=dict(cfg.model.chat_template_kwargs))
    ctx.log.info("sft: pre-flight passed: %s", report["checks"])
    files = {name: str(out / name) for name in ("train.yaml", "dataset_info.json", "data/train.parquet",
                                                DS_FILE, EXPORT_YAML, "launch.sh", "launch.json")
             if (out / name).exists()}
    final = out / (MERGED_DIR if s.finetuning_type == "lora" else MODEL_DIR)
    counts: dict[str, Any] = {"dry_run": s.dry_run, "data": data_stats, "settings": asdict(st),
                              "global_batch": st.global_batch, "launch": launch.as_dict(), "files": files,
                              "preflight": report}
    if s.dry_run:
        _log_dry_run(out, launch, files)
        counts["planned_checkpoint"] = str(final)
        return counts
    code = run_streamed(launch, out / LOG_FILE, ctx.log)
    if code != 0:
        keep = _keep_failure(cfg, out)
        raise SkillFactoryError(f"sft: llamafactory-cli train exited with code {code}; its log: {keep / LOG_FILE} "
                                f"(the yaml and launch files are beside it)")
    world = st.nnodes * max(st.gpus_per_node, 1) if not s.use_cpu else 1
    counts.update(read_results(out / MODEL_DIR, world))
    if s.finetuning_type == "lora":
        from skill_factory.llamafactory.launch import Launch, llamafactory_cli

        export = Launch([llamafactory_cli(), "export", str(out / EXPORT_YAML)], launch_env(cfg))
        code = run_streamed(export, out / LOG_FILE, ctx.log)
        if code != 0:
            keep = _keep_failure(cfg, out)
            raise SkillFactoryError(f"sft: merging the LoRA adapter (llamafactory-cli export) exited with code "
                                    f"{code}; its log: {keep / LOG_FILE}")
        counts["adapter"] = str(out / MODEL_DIR)
    counts.update(checkpoint=str(final), checkpoint_dir=final.name)
    loss = counts.get("loss", {})
    ctx.log.info("sft: %s steps, loss %s -> %s, %s tokens/s; checkpoint %s", counts.get("steps"),
                 loss.get("first"), loss.get("last"), counts.get("tokens_per_second"), final)
    return counts


def sft_checkpoint(artifact) -> str:
    """The model folder an sft artifact produced (what the rl and eval stages load)."""
    from skill_factory.models import trained_checkpoint

    return trained_checkpoint(artifact)
