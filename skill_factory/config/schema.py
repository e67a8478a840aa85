"""Typed schema of every config group, registered with Hydra's ConfigStore.

Why dataclasses: Hydra merges each YAML option onto its group's schema, so a misspelled
key (``sft.lerning_rate=1``) or a value of the wrong type fails at compose time, before
any work starts; required values are ``???`` (``MISSING``). After composition the
entrypoint converts the config to these objects once (``to_typed``) and the library only
ever sees them, never a DictConfig.

Each group's YAML options start with ``defaults: [_schema, _self_]`` and so inherit the
group schema stored here as ``<group>/_schema``; the root schema ``_skillfactory_schema``
types the composed tree as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from skill_factory.tasks.config import TaskConfig


@dataclass
class ModelConfig:
    # short name of the model file, e.g. "tiny", "qwen2_5_1_5b_instruct"
    name: str = MISSING
    # hub id or local directory; null when a stage of this project builds the model
    path: Optional[str] = None
    # LLaMA-Factory chat template name (also used to render prompts for generation)
    template: str = "qwen"
    # longest sequence (prompt + response) the model is used with
    max_length: int = 4096
    # generation backend used by sample/reflect/eval: "hf" (transformers) or "vllm"
    backend: str = "hf"
    # weights dtype: auto, float32, bfloat16, float16
    dtype: str = "auto"
    trust_remote_code: bool = False


@dataclass
class SampleConfig:
    # completions drawn per (question, prompt variant)
    n: int = 4
    # training questions to sample answers for
    num_questions: int = 8000
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    # questions per shard: a crash loses at most one shard
    shard_size: int = 1000


@dataclass
class ReflectConfig:
    # reflections drawn per completion (the released data uses 4)
    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    # whole-word regular expressions; a reflection matching any is dropped
    banned_patterns: List[str] = field(default_factory=list)
    shard_size: int = 1000


@dataclass
class TracesConfig:
    # any of 0C, *C, *C_full, *C*IC, *CC, random, no_reflection
    formats: List[str] = field(default_factory=lambda: ["*C_full"])
    # samples per trace (N)
    n_samples: int = 5
    # traces built per question and format
    repeats: int = 1
    # draw N uniformly in [2, n_samples] per trace
    random_n: bool = False
    # every sample of a trace comes from a different prompt variant
    distinct_variants: bool = False
    # restrict to these prompt variants (null = all)
    variants: Optional[List[str]] = None
    # keep at most this many rows (null = all)
    subsample: Optional[int] = None


@dataclass
class SFTConfig:
    # training method: full or lora
    finetuning_type: str = "full"
    learning_rate: float = 1.0e-6
    num_train_epochs: float = 1.0
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 1.0e-4
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    cutoff_len: int = 16384
    bf16: bool = True
    gradient_checkpointing: bool = True
    # path of a DeepSpeed json config (null = no DeepSpeed)
    deepspeed: Optional[str] = None
    # write the exact command, env and files, and do not train
    dry_run: bool = False


@dataclass
class RLConfig:
    # "verl" (GPU, multi-node) or "trl" (single machine, CPU capable)
    backend: str = "verl"
    adv_estimator: str = "grpo"
    rollout_n: int = 16
    train_batch_size: int = 256
    ppo_mini_batch_size: int = 32
    learning_rate: float = 1.0e-6
    total_epochs: int = 50
    max_prompt_length: int = 512
    max_response_length: int = 4096
    # KL regulariser: "loss" (KL term in the actor loss), "reward" (KL penalty in the
    # reward) or "none"; the coefficient applies to the chosen mechanism only
    kl_mechanism: str = "loss"
    kl_coef: float = 0.001
    # checkpoint to start from (null = the sft stage's checkpoint of this run)
    init_checkpoint: Optional[str] = None
    dry_run: bool = False


@dataclass
class EvalConfig:
    # registry names of the tasks to evaluate, with per-task parameters
    tasks: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # which model: base, sft, rl, or a path / hub id
    model: str = "rl"
    # samples per question (n=1 with temperature 0 is greedy)
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 4096


@dataclass
class WandbConfig:
    project: str = "skill-factory"
    entity: Optional[str] = None
    # runs of one sweep share a group; null = the Hydra job name
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    # online, offline or disabled; null = online when WANDB_API_KEY is set, else offline
    mode: Optional[str] = None


@dataclass
class LoggerConfig:
    # "none" or "wandb"
    name: str = "none"
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class PathsConfig:
    # root of everything the project writes (env SKILLFACTORY_HOME)
    home: str = MISSING
    # stage artifact cache, shared by every run and sweep job (env SKILLFACTORY_ARTIFACTS)
    artifacts: str = MISSING
    # Hydra run directories (env SKILLFACTORY_RUNS)
    runs: str = MISSING
    # this job's directory; null = Hydra's output directory
    run_dir: Optional[str] = None


@dataclass
class SkillFactoryConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    sample: SampleConfig = MISSING
    reflect: ReflectConfig = MISSING
    traces: TracesConfig = MISSING
    sft: SFTConfig = MISSING
    rl: RLConfig = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    # stage names to run, in pipeline order; missing upstream artifacts are built too
    stages: List[str] = field(default_factory=list)
    seed: int = 0
    # extra modules imported before the run, to register user-defined stages
    plugins: List[str] = field(default_factory=list)
    # print the composed config as a tree at start
    print_config: bool = True


GROUP_SCHEMAS: Dict[str, type] = {
    "model": ModelConfig,
    "task": TaskConfig,
    "sample": SampleConfig,
    "reflect": ReflectConfig,
    "traces": TracesConfig,
    "sft": SFTConfig,
    "rl": RLConfig,
    "eval": EvalConfig,
    "logger": LoggerConfig,
}

SCHEMA_NAME = "_schema"
ROOT_SCHEMA_NAME = "_skillfactory_schema"


def register_configs() -> None:
    """Store the root schema and one ``_schema`` node per group (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name=ROOT_SCHEMA_NAME, node=SkillFactoryConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=SCHEMA_NAME, node=schema)
