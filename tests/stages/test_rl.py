"""The rl stage in the pipeline: where it starts from, what its fingerprint holds, what it checks.

Training itself is covered by ``tests/test_trl_grpo.py`` (TRL on CPU) and the verl launch by
``tests/test_verl_launch.py``; here the sft -> rl -> eval handoff runs with a stand-in sft
stage writing a real (tiny, random) model folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tiny_lm import shared_tiny_lm

import skill_factory.stages  # noqa: F401 - registers the stages
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError, SkillFactoryError
from skill_factory.pipeline import REGISTRY, Runner, Stage, config_slice, fingerprint, plan
from skill_factory.stages.rl import init_checkpoint, rl_checkpoint

TINY_RL = ("rl.trl.max_steps=1", "rl.rollout_n=2", "rl.train_batch_size=2", "rl.ppo_mini_batch_size=2",
           "rl.trl.micro_batch_size=4", "rl.max_response_length=8", "rl.data.train_size=4", "rl.data.val_size=2")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_sft(dry_run: bool = False):
    """Stands in for the sft stage: its manifest keys and a model folder."""
    def fn(ctx):
        if dry_run:
            return {"dry_run": True, "planned_checkpoint": str(ctx.out_dir / "model")}
        shutil.copytree(shared_tiny_lm(), ctx.out_dir / "model")
        return {"dry_run": False, "checkpoint": str(ctx.out_dir / "model"), "checkpoint_dir": "model"}

    return Stage("sft", fn, ("seed",), lambda cfg: ())


def run(cfg, sft: Stage | None = None):
    cfg.stages = ["rl"]
    registry = {"rl": REGISTRY["rl"]}
    if sft is not None:
        registry["sft"] = sft
    validate(cfg, registry)
    return Runner(cfg, Path(cfg.paths.artifacts), registry=registry).run()


def test_upstream_is_sft_unless_a_checkpoint_is_given(make_cfg):
    cfg = make_cfg("stages=[rl]")
    assert plan(cfg)[-2:] == ["sft", "rl"]
    assert plan(make_cfg("stages=[rl]", "rl.init_checkpoint=/some/model")) == ["rl"]
    # from the base model: only what the model needs (the tiny model is built by bootstrap)
    assert plan(make_cfg("stages=[rl]", "rl.init_checkpoint=base")) == ["bootstrap", "rl"]
    assert plan(make_cfg("stages=[rl]", "rl.init_checkpoint=base", "model=qwen2_5_1_5b_instruct")) == ["rl"]


def test_sft_checkpoint_flows_into_rl_and_out_to_eval(make_cfg):
    arts = run(make_cfg("rl=trl_grpo", *TINY_RL), sft=fake_sft())
    sft, rl = arts["sft"], arts["rl"]
    assert rl.counts["init_checkpoint"] == str(sft.path / "model")
    assert rl.counts["init_origin"] == f"sft:{sft.fingerprint}"
    assert rl.manifest["upstream"]["sft"]["fingerprint"] == sft.fingerprint
    assert rl.counts["checkpoint_dir"] == "model" and rl.counts["checkpoint"] == str(rl.path / "model")
    assert rl_checkpoint(rl) == str(rl.path / "model")
    assert (rl.path / "data" / "train.parquet").is_file() and (rl.path / "data" / "val.parquet").is_file()
    assert rl.counts["data"]["train_rows"] == 4


def test_rl_dry_run_may_follow_an_sft_dry_run_but_a_real_run_may_not(make_cfg):
    cfg = make_cfg("rl=verl_grpo", "model=qwen2_5_1_5b_instruct", "rl.dry_run=true", "prompts=tiny",
                   "rl.data.train_size=32", "rl.data.val_size=8")
    arts = run(cfg, sft=fake_sft(dry_run=True))
    planned = str(arts["sft"].path / "model")
    assert arts["rl"].counts["init_checkpoint"] == planned
    assert f"actor_rollout_ref.model.path={planned}" in arts["rl"].counts["launch"]["overrides"]
    assert arts["rl"].counts["preflight"]["model"] == "planned by the sft dry run (not checked)"

    class Sft:
        counts = {"dry_run": True, "planned_checkpoint": planned}
        path = arts["sft"].path

    with pytest.raises(SkillFactoryError, match="is a dry run and holds no checkpoint"):
        init_checkpoint(make_cfg("rl=trl_grpo"), {"sft": Sft()}, dry_run=False)


def test_fingerprint_ignores_launch_settings_and_the_other_backend(make_cfg):
    st = REGISTRY["rl"]

    def fp(*overrides):
        return fingerprint(st, config_slice(make_cfg(*overrides), st.config_keys), {})

    base = fp("rl=trl_grpo")
    assert fp("rl=trl_grpo", "rl.trl.torch_threads=2", "rl.trl.logging_steps=5") == base
    assert fp("rl=trl_grpo", "rl.verl.strategy=fsdp", "rl.verl.save_freq=5") == base  # verl block unused
    assert fp("rl=trl_grpo", "rl.learning_rate=2e-5") != base
    assert fp("rl=trl_grpo", "rl.dry_run=true") != base
    assert fp("rl=trl_grpo", "rl.data.train_offset=10") != base
    assert fp("rl=trl_grpo", "prompts.variants.original='Make {target} from {numbers}.'") != base
    verl = fp("rl=verl_grpo")
    assert fp("rl=verl_grpo", "rl.verl.ray_address=h:1", "rl.verl.experiment_name=x") == verl
    assert fp("rl=verl_grpo", "rl.verl.extra_overrides=['actor_rollout_ref.actor.clip_ratio_high=0.28']") != verl
    assert fp("rl=verl_grpo", "model.resources.rl_micro_batch_per_gpu=2") != verl


def test_a_rewritten_init_checkpoint_changes_the_fingerprint(make_cfg, tmp_path):
    st = REGISTRY["rl"]
    model = tmp_path / "model"
    shutil.copytree(shared_tiny_lm(), model)
    cfg = make_cfg("rl=trl_grpo", f"rl.init_checkpoint={model}")
    before = fingerprint(st, config_slice(cfg, st.config_keys), {})
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    assert fingerprint(st, config_slice(cfg, st.config_keys), {}) != before


def test_stage_checks_are_listed_before_any_work(make_cfg, tmp_path):
    cfg = make_cfg("rl=verl_grpo", "stages=[rl]", f"rl.init_checkpoint={tmp_path / 'nope'}", "rl.data.val_size=0",
                   "rl.data.train_size=9000", f"rl.reward_file={tmp_path / 'reward.py'}", "rl.max_response_length=600",
                   "rl.verl.gpus_per_node=3", "model.resources.rollout_tensor_parallel_size=2")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert [p.key for p in info.value.problems] == [
        "rl.init_checkpoint", "rl.data.train_size", "rl.reward_file", "rl.max_response_length", "rl.data.val_size",
        "rl.train_batch_size", "rl.ppo_mini_batch_size", "model.resources.rollout_tensor_parallel_size"]


def test_rl_checkpoint_refuses_artifacts_without_a_model(tmp_path):
    class Art:
        stage = "rl"
        path = tmp_path
        counts = {"dry_run": False}

    with pytest.raises(SkillFactoryError, match="names no checkpoint .*model_merger"):
        rl_checkpoint(Art())
    Art.counts = {"dry_run": False, "checkpoint_dir": "model"}
    with pytest.raises(SkillFactoryError, match="is missing"):
        rl_checkpoint(Art())
