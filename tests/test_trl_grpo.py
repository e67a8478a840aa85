"""TRL GRPO on CPU: the settings map to GRPOConfig as they mean for verl, and a model that
answers right only sometimes gets a reward that varies within a group, so GRPO learns.

The model for that is built here in seconds: the random tiny Llama of ``tests/tiny_lm.py``
trained on four Countdown prompts, each with its right answer and a wrong one equally often.
At convergence it answers each prompt right about half the time, the situation GRPO needs
(a model that never answers, like a random one, gives every group zero variance and a zero
loss). The default-recipe tiny model is exercised by the slow test at the end.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_lm import build_tiny_lm

import skill_factory.stages  # noqa: F401 - registers the stages
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError
from skill_factory.pipeline import REGISTRY, Runner
from skill_factory.rl import trl_grpo
from skill_factory.stages.rl import rl_checkpoint

QUESTIONS = 4


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def half_right_model(tmp_path_factory):
    """A tiny model answering each of the first QUESTIONS train questions right ~half the time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skill_factory.tasks import build_task

    torch.manual_seed(0)
    path = build_tiny_lm(tmp_path_factory.mktemp("half") / "model", hidden=64, layers=2)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    rows = []
    for q in build_task("countdown").questions("train", QUESTIONS, seed=0):
        prompt = tok.apply_chat_template([{"role": "user", "content": "Use {numbers} to make {target}.".format(
            **q.fields)}], tokenize=False, add_generation_prompt=True)
        start = len(tok(prompt, add_special_tokens=False)["input_ids"])
        for answer in (q.meta["solution"], "1 + 2 + 3"):
            rows.append((tok(f"{prompt}<answer>{answer}</answer><|im_end|>", add_special_tokens=False)["input_ids"],
                         start))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, start) in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
        labels[i, start:len(row)] = torch.tensor(row[start:])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    return path


def run_rl(cfg):
    cfg.stages = ["rl"]
    validate(cfg)
    return Runner(cfg, Path(cfg.paths.artifacts), registry={"rl": REGISTRY["rl"]}).run()["rl"]


SMALL_GRPO = ("rl.rollout_n=8", "rl.train_batch_size=4", "rl.ppo_mini_batch_size=2", "rl.trl.micro_batch_size=8",
              "rl.max_response_length=24", "rl.data.val_size=2")


def test_grpo_settings_map_to_trl_as_they_mean_for_verl(make_cfg, tmp_path):
    cfg = make_cfg("rl=trl_grpo")
    args = trl_grpo.grpo_args(cfg, tmp_path)
    # 16 prompts x 8 completions per rollout batch; 16 x 8 completions per update in micro-batches of 32
    assert args["num_generations"] == 8 and args["generation_batch_size"] == 128
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 128
    assert (args["learning_rate"], args["lr_scheduler_type"], args["num_train_epochs"]) == (1e-5, "constant", 1.0)
    assert (args["max_prompt_length"], args["max_completion_length"]) == (64, 448)
    assert (args["beta"], args["epsilon"], args["num_iterations"], args["scale_rewards"], args["loss_type"]) == \
        (0.001, 0.2, 1, "group", "dapo")
    assert args["use_cpu"] is True and args["bf16"] is False
    assert trl_grpo.grpo_args(make_cfg("rl=trl_grpo", "rl.kl_mechanism=none"), tmp_path)["beta"] == 0.0
    GRPOConfig, _ = trl_grpo.import_trl()
    config = GRPOConfig(**args)
    assert config.steps_per_generation == 4  # micro-batches per rollout batch: one update of 4 micro-batches


def test_trl_settings_errors_are_listed(make_cfg):
    cfg = make_cfg("rl=trl_grpo", "rl.kl_mechanism=reward", "rl.adv_estimator=rloo", "rl.trl.micro_batch_size=48",
                   "rl.data.prompt_variant=nope", "stages=[rl]", "rl.init_checkpoint=base")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert [p.key for p in info.value.problems] == ["rl.adv_estimator", "rl.kl_mechanism", "rl.trl.micro_batch_size"]
    # the stage's own checks run when the sections are sound, and only when rl runs
    cfg = make_cfg("rl=trl_grpo", "rl.data.prompt_variant=nope", "rl.init_checkpoint=base", "stages=[]")
    validate(cfg)
    cfg.stages = ["rl"]
    with pytest.raises(ConfigError, match=r"rl.data.prompt_variant: 'nope' is not a prompt variant"):
        validate(cfg)


def test_chat_template_kwargs_reach_trls_prompt_rendering(tmp_path):
    """TRL 0.24's GRPOTrainer renders prompts with maybe_apply_chat_template({"prompt": p},
    processing_class) and no template variables; the bound tokenizer passes the model's."""
    from tiny_lm import DATED_CHAT_TEMPLATE, build_tokenizer

    from skill_factory.generation import chat_messages, render_chat

    trl_grpo.import_trl()
    from trl.data_utils import maybe_apply_chat_template

    pinned = {"date_string": "26 Jul 2024"}
    tok = build_tokenizer(chat_template=DATED_CHAT_TEMPLATE)
    conv = chat_messages("Use [1, 2] to make 3.")
    expected = render_chat(tok, conv, pinned)
    assert "Today Date: 26 Jul 2024\n" in expected
    assert maybe_apply_chat_template({"prompt": conv}, tok)["prompt"] != expected  # today's date
    trl_grpo.bind_template_kwargs(tok, pinned)
    assert maybe_apply_chat_template({"prompt": conv}, tok)["prompt"] == expected
    tok.save_pretrained(tmp_path / "tok")  # the binding is the instance's, not saved with it
    assert "26 Jul 2024" not in (tmp_path / "tok" / "tokenizer_config.json").read_text()


def test_trl_extra_may_not_override_managed_settings(make_cfg, tmp_path):
    from skill_factory.errors import SkillFactoryError

    cfg = make_cfg("rl=trl_grpo", "+rl.trl.extra.beta=0.5")
    with pytest.raises(SkillFactoryError, match="rl.trl.extra: beta are set by the rl settings"):
        trl_grpo.grpo_args(cfg, tmp_path)


def test_trl_grpo_trains_and_the_reward_varies_within_groups(make_cfg, half_right_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = make_cfg("rl=trl_grpo", f"rl.init_checkpoint={half_right_model}", f"rl.data.train_size={QUESTIONS}",
                   "rl.trl.max_steps=4", *SMALL_GRPO)
    art = run_rl(cfg)
    counts = art.counts
    assert counts["backend"] == "trl" and counts["dry_run"] is False
    assert counts["steps"] == 4 and counts["rollout_batches"] == 2
    reward = counts["reward"]
    assert reward["points"] == 2
    assert 0.0 < reward["mean"] < 1.0          # the model answers right only sometimes ...
    assert reward["std_mean"] > 0.0            # ... so rewards differ within a group
    assert reward["frac_reward_zero_std_mean"] < 1.0
    history = json.loads((art.path / trl_grpo.HISTORY_FILE).read_text())
    assert any(h.get("loss", 0.0) != 0.0 for h in history if "loss" in h)
    # the checkpoint eval loads
    path = rl_checkpoint(art)
    assert path == str(art.path / "model")
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template and model.config.model_type == "llama"
    trained = dict(model.named_parameters())
    before = dict(AutoModelForCausalLM.from_pretrained(half_right_model).named_parameters())
    assert any(not torch.equal(trained[k], before[k]) for k in before)


def test_trl_dry_run_checks_and_trains_nothing(make_cfg, half_right_model):
    cfg = make_cfg("rl=trl_grpo", f"rl.init_checkpoint={half_right_model}", "rl.dry_run=true", *SMALL_GRPO)
    art = run_rl(cfg)
    assert art.counts["preflight"]["checks"] == ["GRPOConfig", "reward function", "data files", "model path"]
    assert art.counts["preflight"]["grpo_config"]["generation_batch_size"] == 32
    assert not (art.path / "model").exists()


@pytest.mark.slow
def test_default_tiny_model_gets_a_non_constant_reward(make_cfg):
    """The embedded default (bootstrap recipe, a few minutes to build) through rl=trl_grpo."""
    cfg = make_cfg("rl.init_checkpoint=base", "rl.trl.max_steps=4")
    cfg.stages = ["rl"]
    validate(cfg)
    art = Runner(cfg, Path(cfg.paths.artifacts)).run()["rl"]
    reward = art.counts["reward"]
    assert art.counts["steps"] == 4 and reward["std_mean"] > 0 and 0 < reward["mean"] < 1
