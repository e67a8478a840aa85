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

from skill_factory.rawdata import RawColumns, source_identity
from skill_factory.tasks.config import TaskConfig


@dataclass
class BootstrapConfig:
    """How the bootstrap stage builds and trains the embedded tiny model (model=tiny)."""

    # the tiny model is the fixed "base model" of every experiment on it: its own seed, so a
    # sweep over the run seed reuses one base model, as real experiments reuse one hub model
    seed: int = 0

    # architecture (Llama type; head_dim = hidden_size / num_heads must be >= 32)
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 3
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    # embedding dimensions of each number token 0-999 initialised with sines and cosines of
    # its value (0 = all random)
    value_features: int = 32
    # number tokens read fewer times than this in training prompts (test targets above the
    # largest given number) get embeddings interpolated from their nearest better-read values
    # (0 = keep them as trained)
    rare_number_min_count: int = 20
    # phase 1, the solver: answer examples (each seen once: steps x batch_size of them)
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 4.0e-3
    warmup_steps: int = 100
    # share of answer examples whose answer is a plausible wrong one
    wrong_answer_rate: float = 0.05
    # share of questions with 4 numbers (the rest have 3)
    four_number_rate: float = 0.1
    # prompt variants answered in ``Step k:`` form (the others: one expression)
    step_form_variants: List[str] = field(default_factory=list)
    # phase 2, the checker: the solver samples its own answers to fresh questions, and
    # learns to check them (recomputed arithmetic + verdict) mixed with answer examples
    check_steps: int = 450
    check_share: float = 0.5
    check_learning_rate: float = 2.0e-3
    # share of check examples whose verdict is flipped (imperfect reflections)
    verdict_noise: float = 0.05
    # two threads train 1.35x faster than one on a quiet 2-core machine (the bootstrap stage
    # runs alone); on a machine busy with other work, use 1: two threads then run several
    # times slower than one
    torch_threads: int = 2
    # quality measurement written to the manifest
    eval_questions: int = 200
    eval_samples: int = 8


@dataclass
class ResourcesConfig:
    """What it takes to train this model size: read by the sft and rl stages.

    Facts of fitting the model on hardware, so they live in the model file; the sft and rl
    presets say *what* to train, these say *how* it fits.
    """

    nnodes: int = 1
    gpus_per_node: int = 1
    # LLaMA-Factory
    sft_per_device_batch: int = 1
    sft_gradient_accumulation: int = 1
    sft_cutoff_len: int = 16384
    # DeepSpeed ZeRO stage for SFT (0 = no DeepSpeed)
    zero_stage: int = 2
    # verl (GRPO): sequences per GPU per forward/backward pass of the actor, and per forward
    # pass when computing log-probabilities (reference policy, rollout recompute)
    rl_micro_batch_per_gpu: int = 1
    rl_log_prob_micro_batch_per_gpu: int = 2
    # vLLM rollouts: GPUs per model replica, and the share of GPU memory vLLM may take
    rollout_tensor_parallel_size: int = 1
    rollout_gpu_memory_utilization: float = 0.8
    # FSDP CPU offload of the actor's parameters / optimizer state, and of the reference policy
    param_offload: bool = False
    optimizer_offload: bool = False
    ref_param_offload: bool = False


@dataclass
class ModelConfig:
    # short name of the model file, e.g. "tiny", "qwen2_5_1_5b_instruct"
    name: str = MISSING
    # hub id or local directory; null when a stage of this project builds the model
    path: Optional[str] = None
    # LLaMA-Factory chat template name; null = LLaMA-Factory parses the tokenizer's own chat
    # template (for a model whose format no LLaMA-Factory template matches)
    template: Optional[str] = "qwen"
    # system prompt the model's own chat template adds when a conversation has none, handed
    # to LLaMA-Factory so SFT renders what generation renders ("" = none; null = the
    # LLaMA-Factory template's default, right for models whose template matches it)
    default_system: Optional[str] = None
    # variables for the model's own chat template, passed wherever it renders prompts
    # (sampling, reflection, eval, verl's data.apply_chat_template_kwargs, TRL, the sft
    # pre-flight), e.g. {date_string: "26 Jul 2024"} pins a template that writes today's date
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    # longest sequence (prompt + response) the model is used with
    max_length: int = 4096
    # generation backend used by sample/reflect/eval: "hf" (transformers) or "vllm"
    backend: str = "hf"
    # weights dtype: auto, float32, bfloat16, float16
    dtype: str = "auto"
    trust_remote_code: bool = False
    # generation resources (vllm: tensor parallel size and GPU memory share; hf: batch size)
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    generation_batch_size: int = 64
    # set for a model this project builds itself (the bootstrap stage); path stays null
    bootstrap: Optional[BootstrapConfig] = None
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


@dataclass
class PromptsConfig:
    """A set of prompt variants for the training task and the reflection prompt.

    Templates use the task's named placeholders (Countdown: ``{numbers}``, ``{target}``);
    the reflection template gets ``{question}`` (the rendered question) and ``{response}``.
    """

    # variant name -> user prompt template (at most 8 variants)
    variants: Dict[str, str] = MISSING
    # user prompt asking the model to check one response and end with a verdict tag
    reflection: str = MISSING
    # system prompt (null = none)
    system: Optional[str] = None


@dataclass
class SampleConfig:
    """The sample stage: answers of the base model to the task's training questions."""

    # completions drawn per (question, prompt variant)
    n: int = 4
    # the first this-many questions of the task's train split (drawn with the run seed)
    num_questions: int = 8000
    # 0 = greedy
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    # generation ends after the first of these strings (kept in the text); [] = at end of turn
    stop: List[str] = field(default_factory=list)
    # questions per shard: a crash loses at most one shard (does not change the data)
    shard_size: int = 1000


@dataclass
class ReflectConfig:
    """The reflect stage: the model judges its own completions; judgements are filtered."""

    # reflections drawn per completion (the released data uses 4)
    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    # generation ends after the first of these strings (kept in the text)
    stop: List[str] = field(default_factory=list)
    # regular expressions matched as whole words, case-insensitively; a reflection matching
    # any is dropped (the released script dropped "idea" and "fast" as substrings)
    banned_patterns: List[str] = field(default_factory=list)
    # completions (rows) per shard: a crash loses at most one shard (does not change the data)
    shard_size: int = 1000
    # reflect on an existing raw dataset instead of the sample stage's output: a hub id, or a
    # local parquet / jsonl / json file or folder (null = the sample stage of this run)
    input_dataset: Optional[str] = None
    input_split: str = "train"
    # hub revision (branch, tag or commit) of input_dataset
    input_revision: Optional[str] = None
    # column names of input_dataset by role (null = the paper's names, or their alternatives)
    columns: RawColumns = field(default_factory=RawColumns)

    @property
    def input_identity(self):
        """The data behind input_dataset (local files: path, sizes, mtimes), so a rewritten
        local file changes the reflect artifact's fingerprint (the runner reads this key)."""
        return source_identity(self.input_dataset, self.input_split, self.input_revision)


@dataclass
class PhrasesConfig:
    """Phrase pools the traces stage writes between and after samples (conf/phrases/).

    One phrase per list entry, one line each. Glue after a correct sample is drawn from
    ``after_correct`` + ``generic``, after an incorrect one from ``after_incorrect`` +
    ``generic``; ``no_reflection`` traces use ``generic`` only.
    """

    # continuation after any sample ("let me look at this once more")
    generic: List[str] = MISSING
    # after a sample the reflection found correct
    after_correct: List[str] = MISSING
    # after a sample the reflection found incorrect
    after_incorrect: List[str] = MISSING
    # right before the final <answer> block
    ending: List[str] = MISSING
    # *C*IC: after the last (incorrect) sample, before the earlier correct one is restated
    backtrack: List[str] = MISSING
    # *CC: after two correct samples, before the ending
    confirm: List[str] = MISSING


@dataclass
class TracesConfig:
    """The traces stage: completions and kept reflections rearranged into SFT traces."""

    # any of 0C, *C, *C_full, *C*IC, *CC, random, no_reflection (0C is the STaR baseline)
    formats: List[str] = field(default_factory=lambda: ["*C_full"])
    # samples per trace (N)
    n_samples: int = 5
    # traces built per question and format
    repeats: int = 1
    # *C, *C*IC, *CC: draw N uniformly in [2, n_samples] per trace
    random_n: bool = False
    # every sample of a trace comes from a different prompt variant
    distinct_variants: bool = False
    # restrict to these prompt variants (null = all)
    variants: Optional[List[str]] = None
    # keep at most this many rows of the shuffled dataset (null = all)
    subsample: Optional[int] = None
    # *C_full, random, no_reflection: a question with fewer usable completions than
    # n_samples still gets the traces of the smaller n it supports (false: skip it)
    partial_full: bool = True
    # the prompt variant whose question text is the user turn, when a question's rows carry
    # one rendered prompt per variant (the sample stage's); absent: the first variant by name
    user_variant: Optional[str] = "original"
    # trace token-length statistics with the model's tokenizer, in the manifest (skipped
    # with a warning when the tokenizer cannot be loaded offline)
    token_stats: bool = True
    # build from a published raw dataset instead of the reflect stage's output: a hub id, or
    # a local parquet / jsonl / json file or folder (null = the reflect stage of this run)
    input_dataset: Optional[str] = None
    input_split: str = "train"
    # hub revision (branch, tag or commit) of input_dataset
    input_revision: Optional[str] = None
    # column names of input_dataset by role (null = the paper's names, or their alternatives)
    columns: RawColumns = field(default_factory=RawColumns)
    # also push the dataset to this hub dataset repo (token from HF_TOKEN; null = do not)
    push_to_hub: Optional[str] = None
    hub_private: bool = False

    @property
    def input_identity(self):
        """The data behind input_dataset (local files: path, sizes, mtimes), so a rewritten
        local file changes the traces artifact's fingerprint (the runner reads this key)."""
        return source_identity(self.input_dataset, self.input_split, self.input_revision)


@dataclass
class ShareGPTColumns:
    """Where a ShareGPT dataset keeps its conversations; null = detect from the data.

    Detection: the column ``conversations``, else ``messages``; keys ``role``/``content``,
    else ``from``/``value``; user ``user`` or ``human``, assistant ``assistant`` or ``gpt``,
    system ``system``. The sft stage rewrites any layout to role/content/user/assistant.
    """

    messages: Optional[str] = None
    role_tag: Optional[str] = None
    content_tag: Optional[str] = None
    user_tag: Optional[str] = None
    assistant_tag: Optional[str] = None
    system_tag: Optional[str] = None


@dataclass
class SFTConfig:
    """The sft stage: LLaMA-Factory supervised fine-tuning (``skill_factory.stages.sft``).

    Values left null come from the model file (``model.resources``): how a model size fits
    on hardware is a fact of the model, what to train is the preset's.
    """

    # --- data ---
    # train on this ShareGPT dataset instead of the traces stage's output: a local parquet /
    # jsonl / json file or folder, or a hub id ("bring your own SFT data"; null = traces)
    dataset: Optional[str] = None
    dataset_split: str = "train"
    # hub config name of a hub dataset (LLaMA-Factory's "subset", e.g. sft_train)
    dataset_subset: Optional[str] = None
    # hub revision (branch, tag or commit) of a hub dataset
    dataset_revision: Optional[str] = None
    columns: ShareGPTColumns = field(default_factory=ShareGPTColumns)
    # keep at most this many training rows (null = all)
    max_samples: Optional[int] = None

    # --- what to train ---
    # training method: full, lora or freeze
    finetuning_type: str = "full"
    learning_rate: float = 1.0e-6
    num_train_epochs: float = 1.0
    # stop after this many optimizer steps (null = num_train_epochs decides)
    max_steps: Optional[int] = None
    lr_scheduler_type: str = "cosine"
    # share of the steps spent warming up (written as LLaMA-Factory's float warmup_steps,
    # since transformers 5 deprecates warmup_ratio)
    warmup_ratio: float = 0.05
    weight_decay: float = 1.0e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    # null = model.resources.sft_per_device_batch / sft_gradient_accumulation / sft_cutoff_len
    per_device_train_batch_size: Optional[int] = None
    gradient_accumulation_steps: Optional[int] = None
    cutoff_len: Optional[int] = None
    bf16: bool = True
    gradient_checkpointing: bool = True
    # train on the CPU (the tiny model); no DeepSpeed, no GPUs
    use_cpu: bool = False
    # DeepSpeed ZeRO stage: 0 (none), 2 or 3, using conf/deepspeed/ds_z<stage>.json;
    # null = model.resources.zero_stage
    zero_stage: Optional[int] = None
    # path of a DeepSpeed json config of your own (overrides zero_stage)
    deepspeed: Optional[str] = None
    # LoRA (finetuning_type=lora); lora_alpha null = 2 * lora_rank
    lora_rank: int = 8
    lora_alpha: Optional[int] = None
    lora_dropout: float = 0.0
    lora_target: str = "all"

    # --- saving and logging ---
    # save model weights only (no optimizer state) in checkpoints
    save_only_model: bool = True
    # also save a checkpoint every this many steps (null = only the final model)
    save_steps: Optional[int] = None
    save_total_limit: Optional[int] = None
    logging_steps: int = 10
    # save a loss plot (training_loss.png) next to the checkpoint
    plot_loss: bool = True
    # any other LLaMA-Factory / transformers training argument, passed through verbatim and
    # checked by LLaMA-Factory's own parser in the pre-flight (a typo fails there); on the
    # command line: +sft.extra.neftune_noise_alpha=5
    extra: Dict[str, Any] = field(default_factory=dict)

    # --- launch (where and how; not part of the artifact fingerprint) ---
    # nodes and GPUs per node; null = model.resources.nnodes / gpus_per_node
    nnodes: Optional[int] = None
    gpus_per_node: Optional[int] = None
    # multi-node rendezvous; null = from the Slurm allocation, else NODE_RANK / MASTER_ADDR /
    # MASTER_PORT in the environment (port default 29500)
    node_rank: Optional[int] = None
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    # OMP_NUM_THREADS of the training process (null = inherited)
    cpu_threads: Optional[int] = None
    # the LLaMA-Factory template must render a conversation exactly as the tokenizer's own
    # chat template does (false = only warn)
    strict_template: bool = True
    # write the exact command, env and files, run the pre-flight, and do not train
    dry_run: bool = False

    @property
    def dataset_identity(self):
        """The data behind ``dataset`` (local files: path, sizes, mtimes), so a rewritten
        local file changes the sft artifact's fingerprint (the sft stage reads this key)."""
        from skill_factory.rawdata import source_identity

        return source_identity(self.dataset, self.dataset_split, self.dataset_revision)


# verl settings that decide where the run happens and how it is logged, not what it trains;
# kept out of the rl artifact's fingerprint (see RLConfig.output_settings)
VERL_LAUNCH_ONLY = ("ray_address", "ray_port", "experiment_name")
# TRL settings of the same kind
TRL_LAUNCH_ONLY = ("torch_threads", "logging_steps")


@dataclass
class RLDataConfig:
    """Which questions become RL prompts, and how they are rendered (both backends).

    Training prompts are questions ``[train_offset, train_offset + train_size)`` of the task's
    train split, drawn with the run seed like the sample stage's: offset 0 reuses the questions
    the SFT data was sampled from (the prefix), ``train_offset=<sample.num_questions>`` gives
    prompts the SFT data never saw. Validation prompts come from the task's val split.
    """

    # null = task.train_size - train_offset
    train_size: Optional[int] = None
    train_offset: int = 0
    # null = task.val_size
    val_size: Optional[int] = None
    # the prompt variant (a key of prompts.variants) every RL prompt is rendered with, as a
    # chat [system?, user] exactly as the sample stage renders it
    prompt_variant: str = "original"


@dataclass
class VerlConfig:
    """verl-only settings (``rl=verl_grpo``): the engine side of the paper's command.

    GPU counts, micro-batches, rollout tensor parallelism, memory share and offload come from
    the model file (``model.resources``); what is trained comes from the ``rl`` block.
    """

    # actor / reference training strategy (fsdp, fsdp2)
    strategy: str = "fsdp2"
    # rollout engine and its weights dtype
    rollout_engine: str = "vllm"
    rollout_dtype: str = "bfloat16"
    max_num_batched_tokens: int = 16384
    max_num_seqs: int = 2048
    gradient_checkpointing: bool = True
    activation_offload: bool = True
    remove_padding: bool = True
    forward_prefetch: bool = True
    # KL estimator: actor.kl_loss_type (rl.kl_mechanism=loss) or algorithm.kl_penalty
    # (rl.kl_mechanism=reward); low_var_kl is the clipped k3 estimator GRPO uses
    kl_estimator: str = "low_var_kl"
    # verl 0.9 reward wiring: reward.reward_manager.name and reward.custom_reward_function.name
    # (naive calls the function once per sample: compute_score; the file is rl.reward_file)
    reward_manager: str = "naive"
    reward_function: str = "compute_score"
    # checkpoint every this many training steps (batches), and always at the last step (the
    # handoff converts that one; verl saves nothing at all with -1); validation every test_freq
    # steps (-1 = none)
    save_freq: int = 25
    # keep only the newest this-many actor checkpoints (null = all: for the 1.5B model each
    # holds ~18 GB of weights and optimizer state, and 50 epochs save ~60 of them)
    max_checkpoints: Optional[int] = 2
    test_freq: int = 25
    val_before_train: bool = True
    # convert the final FSDP checkpoint to a Hugging Face folder with verl's model merger
    merge: bool = True
    # nodes and GPUs per node; null = model.resources.nnodes / gpus_per_node
    nnodes: Optional[int] = None
    gpus_per_node: Optional[int] = None
    # any other verl override, verbatim (``key=value``; ``+key=value`` adds a key verl's config
    # lacks); checked by composing verl's own config in the pre-flight, so a typo fails there.
    # On the command line quote the items: "rl.verl.extra_overrides=['a.b=1']"
    extra_overrides: List[str] = field(default_factory=list)
    # --- launch only (not part of the fingerprint) ---
    # Ray head "host:port" of a running cluster (multi-node); null = RAY_ADDRESS, else the first
    # host of the Slurm allocation at ray_port, else (one node) a local Ray verl starts itself
    ray_address: Optional[str] = None
    ray_port: int = 6379
    # verl's trainer.experiment_name (its project is logger.wandb.project); null =
    # <model.name>-rl-<artifact fingerprint>
    experiment_name: Optional[str] = None


@dataclass
class TRLConfig:
    """TRL-only settings (``rl=trl_grpo``): GRPO on one machine, CPU capable."""

    # completions per forward/backward pass; must divide rl.ppo_mini_batch_size * rl.rollout_n
    micro_batch_size: int = 8
    # stop after this many optimizer steps (null = rl.total_epochs decides)
    max_steps: Optional[int] = None
    use_cpu: bool = True
    # TRL's loss aggregation; dapo = mean over every token of the optimizer step's
    # completions, which is verl's token-mean
    loss_type: str = "dapo"
    # also save a checkpoint every this many steps (null = only the final model)
    save_steps: Optional[int] = None
    # any other trl.GRPOConfig argument, verbatim (checked by GRPOConfig itself)
    extra: Dict[str, Any] = field(default_factory=dict)
    # --- launch only (not part of the fingerprint) ---
    # torch threads of the training process (null = torch's default)
    torch_threads: Optional[int] = 1
    logging_steps: int = 1


@dataclass
class RLConfig:
    """The rl stage: GRPO from the SFT checkpoint, with verl (GPUs) or TRL (CPU).

    The GRPO hyper-parameters are shared by both backends and use verl's meaning: batches
    count prompts, each answered ``rollout_n`` times.
    """

    # "verl" (GPU, multi-node) or "trl" (single machine, CPU capable)
    backend: str = "verl"
    # verl's algorithm.adv_estimator (grpo; TRL implements grpo only)
    adv_estimator: str = "grpo"
    # completions per prompt (the GRPO group)
    rollout_n: int = 16
    # prompts per training step (one rollout batch)
    train_batch_size: int = 256
    # prompts per optimizer update (train_batch_size / ppo_mini_batch_size updates per step)
    ppo_mini_batch_size: int = 32
    learning_rate: float = 1.0e-6
    total_epochs: int = 50
    max_prompt_length: int = 512
    max_response_length: int = 4096
    # rollout sampling
    temperature: float = 1.0
    top_p: float = 1.0
    # KL regulariser towards the initial policy: "loss" (a KL term in the actor loss, GRPO's
    # formulation), "reward" (a KL penalty subtracted from the reward, PPO's) or "none"; the
    # coefficient applies to the chosen mechanism only
    kl_mechanism: str = "loss"
    kl_coef: float = 0.001
    # the reward file both backends load by path (null = rewards/answer_tag.py of this
    # checkout) and its keyword arguments (e.g. format_score: 0.1 credits a tagged wrong answer)
    reward_file: Optional[str] = None
    reward_kwargs: Dict[str, Any] = field(default_factory=dict)
    # where training starts: null = the sft stage's checkpoint of this run; "base" = the base
    # model (model.path, or the bootstrap stage's model: the paper's RL-only baseline); else a
    # local Hugging Face folder or a hub id
    init_checkpoint: Optional[str] = None
    # write the data, the exact command and files, run the pre-flight, and do not train
    dry_run: bool = False
    data: RLDataConfig = field(default_factory=RLDataConfig)
    verl: VerlConfig = field(default_factory=VerlConfig)
    trl: TRLConfig = field(default_factory=TRLConfig)

    @property
    def output_settings(self) -> dict:
        """The settings that decide what the rl stage produces (the runner hashes this key).

        The shared GRPO settings, the data, and the active backend's block without its
        launch-only fields; a local ``init_checkpoint`` adds its files' sizes and mtimes so a
        rewritten folder changes the fingerprint.
        """
        from dataclasses import asdict

        out = {k: v for k, v in asdict(self).items() if k not in ("verl", "trl")}
        if self.backend == "verl":
            out["verl"] = {k: v for k, v in asdict(self.verl).items() if k not in VERL_LAUNCH_ONLY}
        else:
            out["trl"] = {k: v for k, v in asdict(self.trl).items() if k not in TRL_LAUNCH_ONLY}
        if self.init_checkpoint not in (None, "base"):
            from pathlib import Path

            path = Path(self.init_checkpoint).expanduser()
            if path.is_dir():
                out["init_checkpoint_files"] = {
                    f.name: [f.stat().st_size, int(f.stat().st_mtime)]
                    for f in sorted(path.iterdir()) if f.is_file()}
        return out


@dataclass
class EvalTaskConfig:
    """One entry of an evaluation suite (``eval.tasks.<entry>``): a task and its test questions.

    The entry key names the row of the report (``countdown_5``); ``task`` is the registry name,
    so one task can appear several times with different parameters.
    """

    # registry name: countdown, longmult, letter_countdown, acronym, gsm8k, csqa
    task: str = MISSING
    # parameters of the task's params dataclass (e.g. num_numbers: 5, digits: 3, path: x.jsonl);
    # for the training task they override its block (task.<name>), so the test split keeps the
    # training run's partition and Countdown test targets stay held out from training targets
    params: Dict[str, Any] = field(default_factory=dict)
    # test questions (0 = every record of a loaded task such as gsm8k / csqa)
    size: int = 250
    # user prompt template with the task's placeholders; null = for the training task the
    # prompt variant eval.prompt_variant (what the model was trained on), else the task's own
    template: Optional[str] = None


@dataclass
class BudgetMarker:
    """Where a response closes its reasoning, for budget forcing."""

    text: str = MISSING
    # true: the cut keeps the marker (a final </answer> stays, the model goes on after it);
    # false: the cut removes it (a </think> is taken back, the model keeps thinking)
    keep: bool = False


@dataclass
class BudgetForcingConfig:
    """s1-style budget forcing (``skill_factory.evaluation.budget``); off while budgets is []."""

    # thinking-token budgets of the sweep (a budget <= 0 forces the answer at once)
    budgets: List[int] = field(default_factory=list)
    # continuation rounds R: how often a response that closes early is made to go on
    max_rounds: int = 2
    # suite entries to force, by entry key or task name ([] = every entry)
    tasks: List[str] = field(default_factory=list)
    # decoding of the sweep: greedy, or sampled (eval.n samples at eval.temperature)
    decoding: str = "greedy"
    # markers tried in order; the last occurrence of the first one present is the cut point
    # (none present: the end of the response)
    markers: List[BudgetMarker] = field(default_factory=lambda: [
        BudgetMarker("</think>", keep=False), BudgetMarker("</answer>", keep=True)])
    # phrase appended at round r: continuation[r % len]
    continuation: List[str] = field(default_factory=lambda: ["Wait"])
    # text between the cut response and the continuation phrase
    separator: str = "\n"
    # when the budget is spent (or no final answer came): think_close if a think block is
    # open ("" = never), then force_answer, then up to answer_max_new_tokens until answer_close
    think_open: str = "<think>"
    think_close: str = "</think>"
    force_answer: str = "\n\n<answer>\n"
    answer_close: str = "</answer>"
    answer_max_new_tokens: int = 64


@dataclass
class EvalConfig:
    """The eval stage (``skill_factory.stages.eval``): suites in ``conf/eval/``."""

    # suite name, shown in reports
    suite: str = "custom"
    # suite entries: entry key -> task, parameters, size
    tasks: Dict[str, EvalTaskConfig] = field(default_factory=dict)
    # which model: base, sft, rl (this run's checkpoints), or a path / hub id
    model: str = "rl"
    # decoding: temperature 0 = greedy only (n must be 1); temperature > 0 = n samples per
    # question ("sampled"), plus a greedy pass when greedy is true
    greedy: bool = True
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 4096
    # pass@k reported for these k (those <= n; unbiased estimator)
    pass_k: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    # prompt variant (prompts.variants) for the training task's entries (null = task.template)
    prompt_variant: Optional[str] = "original"
    # seed of the generated test questions (fixed, so every run answers the same questions)
    question_seed: int = 0
    budget_forcing: BudgetForcingConfig = field(default_factory=BudgetForcingConfig)


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
    prompts: PromptsConfig = MISSING
    sample: SampleConfig = MISSING
    reflect: ReflectConfig = MISSING
    traces: TracesConfig = MISSING
    phrases: PhrasesConfig = MISSING
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
    "prompts": PromptsConfig,
    "sample": SampleConfig,
    "reflect": ReflectConfig,
    "traces": TracesConfig,
    "phrases": PhrasesConfig,
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
