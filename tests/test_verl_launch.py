"""verl GRPO on a CPU machine: data through verl's RLHFDataset, overrides through verl's own
config composer and validator, the reward through verl's loaders, and the exact launch.

Nothing here trains (verl's workers need GPUs); everything verl can do on a CPU is exercised
with our files: ``RLHFDataset`` loads the parquet, ``hydra.compose`` of the packaged
``ppo_trainer`` takes every override of every model file, ``validate_config`` accepts the
result, ``load_reward_manager`` scores with the reward our overrides name, and the launch
command, environment and ``launch.sh`` are compared exactly (single node and Ray multi-node).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

verl = pytest.importorskip("verl")

from conftest import CONF, REPO
from tiny_lm import shared_tiny_lm

import skill_factory.stages  # noqa: F401 - registers the stages
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError, SkillFactoryError
from skill_factory.pipeline import REGISTRY, Runner
from skill_factory.rl import verl_run as vr
from skill_factory.rl.data import TRAIN_FILE, VAL_FILE, write_rl_data

GOLDEN = Path(__file__).resolve().parent / "golden" / "rl_verl_paper_launch.sh"
MODEL_FILES = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
REWARD = REPO / "rewards" / "answer_tag.py"
# small data so a dry run is quick; the prompts of the tiny model fit any tokenizer
SMALL = ("rl.data.train_size=32", "rl.data.val_size=8", "prompts=tiny")


@pytest.fixture
def verl_cfg(make_cfg):
    def make(*overrides, model="qwen2_5_1_5b_instruct"):
        return make_cfg(f"model={model}", "rl=verl_grpo", *SMALL, *overrides)

    return make


def paths_for(out: Path, model: str = "/models/sft") -> vr.Paths:
    return vr.Paths(model=model, train_file=str(out / TRAIN_FILE), val_file=str(out / VAL_FILE),
                    checkpoint_dir=str(out / "checkpoints"), reward_file=str(REWARD), hydra_dir=str(out / "hydra"))


def run_rl(cfg):
    cfg.stages = ["rl"]
    validate(cfg)
    return Runner(cfg, Path(cfg.paths.artifacts), registry={"rl": REGISTRY["rl"]}).run()["rl"]


# --- data ---------------------------------------------------------------------------------------

def test_rl_parquet_loads_through_verls_rlhf_dataset(verl_cfg, tmp_path):
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from skill_factory.generation import chat_messages, render_chat
    from skill_factory.tasks.config import get_task

    cfg = verl_cfg()
    stats = write_rl_data(cfg, tmp_path)
    assert (stats["train_rows"], stats["val_rows"]) == (32, 8)
    composed = vr.compose_ppo_trainer(vr.overrides(cfg, paths_for(tmp_path, str(shared_tiny_lm())),
                                                   experiment_name="t", loggers=["console"]))
    tok = AutoTokenizer.from_pretrained(shared_tiny_lm())
    ds = RLHFDataset(data_files=[str(tmp_path / TRAIN_FILE)], tokenizer=tok, config=composed.data)
    assert len(ds) == 32
    task = get_task(cfg.task)
    questions = task.questions("train", 32, seed=cfg.seed)
    for i in (0, 31):
        row, q = ds[i], questions[i]
        user = task.render(q, cfg.prompts.variants["original"])
        # the prompt verl renders is the one the sample and eval stages render
        assert row["raw_prompt"] == chat_messages(user, cfg.prompts.system)
        assert (tok.apply_chat_template(row["raw_prompt"], tokenize=False, add_generation_prompt=True)
                == render_chat(tok, chat_messages(user, cfg.prompts.system)))
        assert row["data_source"] == "countdown" and row["ability"] == "math"
        assert row["reward_model"] == {"style": "rule", "ground_truth": q.gold}
        info = row["extra_info"]
        assert (info["split"], info["index"], info["question_id"]) == ("train", i, q.id)
        assert info["fields"] == dict(q.fields) and json.loads(info["task_params"])["num_numbers"] == 3
        assert row["index"] == i
    val = RLHFDataset(data_files=[str(tmp_path / VAL_FILE)], tokenizer=tok, config=composed.data)
    assert len(val) == 8 and val[0]["extra_info"]["split"] == "val"
    # deterministic: the same config writes the same bytes
    again = tmp_path / "again"
    write_rl_data(cfg, again)
    assert (again / TRAIN_FILE).read_bytes() == (tmp_path / TRAIN_FILE).read_bytes()


def test_the_models_chat_template_kwargs_reach_verls_prompt_rendering(verl_cfg, tmp_path):
    """Llama 3.2's date_string goes to verl's data.apply_chat_template_kwargs, which its
    RLHFDataset and its rollout's token builder render prompts with: verl's first rollout
    tokens are then exactly the prompt the sample and eval stages generate from."""
    from tiny_lm import DATED_CHAT_TEMPLATE, build_tiny_lm
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from skill_factory.generation import encode_chat
    from skill_factory.rl.data import prompt_token_lengths

    cfg = verl_cfg(model="llama3_2_3b_instruct")
    pinned = {"date_string": "26 Jul 2024"}
    assert cfg.model.chat_template_kwargs == pinned
    ovr = vr.overrides(cfg, paths_for(tmp_path), experiment_name="t", loggers=["console"])
    assert "+data.apply_chat_template_kwargs.date_string='26 Jul 2024'" in ovr
    assert not any("apply_chat_template_kwargs" in o for o in
                   vr.overrides(verl_cfg(), paths_for(tmp_path), experiment_name="t", loggers=["console"]))
    composed = vr.compose_ppo_trainer(ovr)
    assert dict(composed.data.apply_chat_template_kwargs) == pinned
    write_rl_data(cfg, tmp_path)
    tok = AutoTokenizer.from_pretrained(build_tiny_lm(tmp_path / "dated", chat_template=DATED_CHAT_TEMPLATE))
    ds = RLHFDataset(data_files=[str(tmp_path / TRAIN_FILE)], tokenizer=tok, config=composed.data)
    builder = create_continuous_token_builder(tok, hf_model_type="llama",
                                              chat_template_kwargs=composed.data.apply_chat_template_kwargs)
    rollout_ids = builder.build_initial_tokens(ds[0]["raw_prompt"])
    assert rollout_ids == encode_chat(tok, ds[0]["raw_prompt"], template_kwargs=cfg.model.chat_template_kwargs)
    assert "Today Date: 26 Jul 2024\n" in tok.decode(rollout_ids)
    # the rl pre-flight measures prompt lengths the same way
    assert prompt_token_lengths(tmp_path / TRAIN_FILE, tok, pinned)[0] == len(rollout_ids)


def test_train_offset_gives_questions_after_the_sft_ones(verl_cfg, tmp_path):
    import pyarrow.parquet as pq

    cfg = verl_cfg("rl.data.train_offset=384", "rl.data.train_size=4")
    write_rl_data(cfg, tmp_path)
    ids = [r["question_id"] for r in pq.read_table(tmp_path / TRAIN_FILE).column("extra_info").to_pylist()]
    assert ids[0].endswith("-00384") and ids[-1].endswith("-00387")


# --- the paper preset and every model file compose against verl's config -------------------------

def test_paper_preset_maps_to_the_paper_settings(verl_cfg, tmp_path):
    cfg = verl_cfg()
    c = vr.compose_ppo_trainer(vr.overrides(cfg, paths_for(tmp_path), experiment_name="t", loggers=["console"]))
    a, r = c.actor_rollout_ref, c.actor_rollout_ref.rollout
    assert c.algorithm.adv_estimator == "grpo"
    assert (r.n, c.data.train_batch_size, a.actor.ppo_mini_batch_size, a.actor.ppo_micro_batch_size_per_gpu) == \
        (16, 256, 32, 1)
    assert (a.actor.optim.lr, c.trainer.total_epochs) == (1e-6, 50)
    assert (c.data.max_prompt_length, c.data.max_response_length) == (512, 4096)
    assert a.actor.strategy == "fsdp2" and a.ref.strategy == "fsdp2"
    assert a.model.enable_gradient_checkpointing and a.model.enable_activation_offload and a.model.use_remove_padding
    assert r.dtype == "bfloat16" and r.name == "vllm"
    assert (c.trainer.nnodes, c.trainer.n_gpus_per_node) == (1, 4)
    # the KL regulariser is explicit: the actor's KL loss at 0.001, KL-in-reward off
    assert a.actor.use_kl_loss and a.actor.kl_loss_coef == 0.001 and a.actor.kl_loss_type == "low_var_kl"
    assert c.algorithm.use_kl_in_reward is False
    # verl 0.9 reward keys (the release's old keys stay at verl's null defaults)
    assert c.reward.reward_manager.name == "naive"
    assert c.reward.custom_reward_function.path == str(REWARD)
    assert c.reward.custom_reward_function.name == "compute_score"
    assert c.custom_reward_function.path is None and c.reward_model.reward_manager is None
    assert c.trainer.default_local_dir == str(tmp_path / "checkpoints") and c.trainer.resume_mode == "auto"


@pytest.mark.filterwarnings("ignore:Disabled critic")
@pytest.mark.parametrize("model", MODEL_FILES)
def test_every_model_file_composes_and_passes_verls_validator(verl_cfg, tmp_path, model):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from skill_factory.config.problems import Problems

    cfg = verl_cfg("rl.dry_run=true", f"rl.init_checkpoint={shared_tiny_lm()}", "stages=[rl]", model=model)
    if cfg.model.max_length < cfg.rl.max_prompt_length + cfg.rl.max_response_length:
        # a model with a shorter context than the paper's prompt + response (OLMo 2: 4096, the tiny
        # model: 512) is refused by the stage's check; shorter lengths make it fit
        cfg.rl.max_prompt_length = min(cfg.rl.max_prompt_length, cfg.model.max_length // 4)
        cfg.rl.max_response_length = cfg.model.max_length - cfg.rl.max_prompt_length
    validate(cfg)  # the sections and the rl stage's own checks
    composed = vr.compose_ppo_trainer(vr.overrides(cfg, paths_for(tmp_path), experiment_name="t",
                                                   loggers=["console"]))
    validate_config(composed, use_reference_policy=need_reference_policy(composed), use_critic=need_critic(composed))
    res = cfg.model.resources
    rollout = composed.actor_rollout_ref.rollout
    assert composed.trainer.n_gpus_per_node == res.gpus_per_node
    assert (rollout.tensor_model_parallel_size, rollout.gpu_memory_utilization) == \
        (res.rollout_tensor_parallel_size, res.rollout_gpu_memory_utilization)
    assert composed.actor_rollout_ref.ref.fsdp_config.param_offload == res.ref_param_offload
    p = Problems()
    vr.static_problems(cfg, p)
    assert not p, [str(x) for x in p.items]


def test_kl_in_reward_and_no_kl_are_explicit(verl_cfg, tmp_path):
    cfg = verl_cfg("rl.kl_mechanism=reward", "rl.verl.kl_estimator=kl")
    c = vr.compose_ppo_trainer(vr.overrides(cfg, paths_for(tmp_path), experiment_name="t", loggers=["console"]))
    assert c.algorithm.use_kl_in_reward and c.algorithm.kl_ctrl.kl_coef == 0.001 and c.algorithm.kl_penalty == "kl"
    assert c.actor_rollout_ref.actor.use_kl_loss is False
    cfg = verl_cfg("rl.kl_mechanism=none")
    c = vr.compose_ppo_trainer(vr.overrides(cfg, paths_for(tmp_path), experiment_name="t", loggers=["console"]))
    assert not c.algorithm.use_kl_in_reward and not c.actor_rollout_ref.actor.use_kl_loss


def test_reward_our_overrides_name_loads_through_verls_reward_manager(verl_cfg, tmp_path):
    """The reward wiring end to end: our keys -> verl's loader -> our file -> the verifier."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager

    from skill_factory.rl.reward import load_function, trl_reward
    from skill_factory.tasks import build_task

    cfg = verl_cfg("+rl.reward_kwargs.format_score=0.1")
    composed = vr.compose_ppo_trainer(vr.overrides(cfg, paths_for(tmp_path), experiment_name="t",
                                                   loggers=["console"]))
    tok = AutoTokenizer.from_pretrained(shared_tiny_lm())
    manager = load_reward_manager(composed, tok)
    q = build_task("countdown").questions("train", 1, seed=0)[0]
    responses = [f"<answer>{q.meta['solution']}</answer>", "<answer>1 + 2</answer>", "no answer"]
    got = []
    for text in responses:
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = len(ids)
        data = DataProto.from_dict(
            tensors={"prompts": torch.tensor([[tok.eos_token_id]]), "responses": torch.tensor([ids]),
                     "input_ids": torch.tensor([[tok.eos_token_id] + ids]),
                     "attention_mask": torch.ones((1, n + 1), dtype=torch.long)},
            non_tensors={"data_source": np.array(["countdown"], dtype=object),
                         "reward_model": np.array([{"style": "rule", "ground_truth": q.gold}], dtype=object),
                         "extra_info": np.array([{"split": "train", "index": 0}], dtype=object)})
        got.append(manager.loop.run_until_complete(manager.run_single(data))["reward_score"])
    assert got == [1.0, 0.1, 0.0]
    # TRL's adapter of the same file gives the same rewards
    fn = trl_reward(load_function(REWARD, "compute_score_batch"), {"format_score": 0.1})
    assert fn(prompts=[None] * 3, completions=[[{"role": "assistant", "content": t}] for t in responses],
              data_source=["countdown"] * 3, reward_model=[{"style": "rule", "ground_truth": q.gold}] * 3,
              extra_info=[{}] * 3) == got


# --- pre-flight --------------------------------------------------------------------------------

def test_misspelled_override_fails_preflight_with_our_message(verl_cfg):
    cfg = verl_cfg("rl.dry_run=true", f"rl.init_checkpoint={shared_tiny_lm()}",
                   "rl.verl.extra_overrides=['actor_rollout_ref.actor.clip_ratio_high=0.28',"
                   "'actor_rollout_ref.actor.optim.lrr=1e-6']")
    with pytest.raises(ConfigError) as info:
        run_rl(cfg)
    (problem,) = info.value.problems
    assert problem.key == "rl.verl.extra_overrides[1]"
    assert "verl's ppo_trainer config rejects 'actor_rollout_ref.actor.optim.lrr=1e-6'" in problem.what
    assert "Could not override 'actor_rollout_ref.actor.optim.lrr'" in problem.what
    assert "_generated_ppo_trainer.yaml" in problem.fix and "'+'" in problem.fix


def test_our_value_checks_are_gathered(verl_cfg, tmp_path):
    cfg = verl_cfg("rl.adv_estimator=grpoo", "rl.verl.reward_function=compute_score_batch",
                   "rl.verl.gpus_per_node=3", "model.resources.rollout_tensor_parallel_size=2",
                   "rl.max_prompt_length=2")
    write_rl_data(cfg, tmp_path)
    ovr = vr.overrides(cfg, paths_for(tmp_path, str(shared_tiny_lm())), experiment_name="t", loggers=["console"])
    with pytest.raises(ConfigError) as info:
        vr.preflight(cfg, ovr, paths_for(tmp_path, str(shared_tiny_lm())), dry_run=True)
    keys = [p.key for p in info.value.problems]
    assert keys == ["rl.train_batch_size", "rl.ppo_mini_batch_size", "model.resources.rollout_tensor_parallel_size",
                    "rl.adv_estimator", "rl.verl.reward_function", "rl.max_prompt_length"]
    text = str(info.value)
    assert "'grpoo' is not a verl advantage estimator" in text
    assert "cannot take the arguments the 'naive' reward manager passes" in text


def test_missing_model_and_data_fail_preflight(verl_cfg, tmp_path):
    cfg = verl_cfg()
    paths = paths_for(tmp_path, str(tmp_path / "no-such-model"))
    ovr = vr.overrides(cfg, paths, experiment_name="t", loggers=["console"])
    with pytest.raises(ConfigError) as info:
        vr.preflight(cfg, ovr, paths, dry_run=True)
    text = str(info.value)
    assert "rl.data.train: data file not found" in text and "rl.init_checkpoint: no such folder" in text


def test_a_real_launch_without_gpus_fails_before_launching(verl_cfg):
    cfg = verl_cfg(f"rl.init_checkpoint={shared_tiny_lm()}")
    with pytest.raises(ConfigError, match=r"rl.backend: verl trains on GPUs: 4 per node needed, this machine has 0"):
        run_rl(cfg)


# --- the launch ----------------------------------------------------------------------------------

def test_paper_dry_run_writes_the_exact_launch(verl_cfg):
    model = shared_tiny_lm()
    cfg = verl_cfg("rl.dry_run=true", f"rl.init_checkpoint={model}")
    art = run_rl(cfg)
    out = art.path
    expected = GOLDEN.read_text().format(python=sys.executable, out=out, model=model, reward=REWARD,
                                         fingerprint=art.fingerprint)
    assert (out / "launch.sh").read_text() == expected
    launch = json.loads((out / "launch.json").read_text())
    assert launch["train"]["env"] == {"HYDRA_FULL_ERROR": "1"}
    assert launch["train"]["argv"][:3] == [sys.executable, "-m", "verl.trainer.main_ppo"]
    assert launch["train"]["argv"][3:] == launch["overrides"] + launch["hydra_overrides"]
    assert launch["merge"]["argv"] == [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
                                       "--local_dir", f"{out}/checkpoints/global_step_<last>/actor",
                                       "--target_dir", f"{out}/model"]
    counts = art.counts
    assert counts["dry_run"] is True and counts["planned_checkpoint"] == f"{out}/model"
    assert counts["preflight"]["checks"][:2] == ["compose", "verl validate_config"]
    # a dry run is not a checkpoint, and the real run of the same settings is another artifact
    from skill_factory.stages.rl import rl_checkpoint

    with pytest.raises(SkillFactoryError, match="dry run"):
        rl_checkpoint(art)
    from skill_factory.pipeline import config_slice, fingerprint

    real = verl_cfg(f"rl.init_checkpoint={model}")
    st = REGISTRY["rl"]
    assert fingerprint(st, config_slice(real, st.config_keys), {}) != art.fingerprint


SLURM = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_NUM_NODES": "2"}


def test_multi_node_launch_takes_the_ray_head_from_slurm(verl_cfg, monkeypatch):
    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = verl_cfg("rl.dry_run=true", f"rl.init_checkpoint={shared_tiny_lm()}", "rl.verl.nnodes=2",
                   model="qwen2_5_7b_instruct")
    out = run_rl(cfg).path
    launch = json.loads((out / "launch.json").read_text())
    assert launch["train"]["env"] == {"HYDRA_FULL_ERROR": "1", "RAY_ADDRESS": "gpu01:6379"}
    assert "trainer.nnodes=2" in launch["overrides"] and "trainer.n_gpus_per_node=8" in launch["overrides"]
    assert "actor_rollout_ref.rollout.tensor_model_parallel_size=2" in launch["overrides"]
    script = (out / "launch.sh").read_text().splitlines()
    assert script[5:8] == ["export HYDRA_FULL_ERROR=1", "export RAY_ADDRESS=gpu01:6379",
                           f"{sys.executable} -m verl.trainer.main_ppo \\"]
    assert "    trainer.nnodes=2 \\" in script


def test_multi_node_address_from_config_or_environment(verl_cfg, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = verl_cfg("rl.verl.nnodes=2", "rl.verl.ray_address=10.0.0.5:6400")
    assert vr.ray_address(cfg, vr.resources(cfg)) == "10.0.0.5:6400"
    cfg = verl_cfg("rl.verl.nnodes=2")
    assert vr.ray_address(cfg, vr.resources(cfg), environ={"RAY_ADDRESS": "head:1"}) == "head:1"
    assert vr.ray_address(verl_cfg(), vr.resources(verl_cfg()), environ={}) is None  # one node: local Ray
    with pytest.raises(SkillFactoryError, match="needs a Ray cluster"):
        vr.ray_address(cfg, vr.resources(cfg), environ={})
    # a real multi-node run outside any cluster is refused at validation, before any work
    cfg.stages = ["rl"]
    with pytest.raises(ConfigError, match=r"rl.verl.ray_address: 2-node training needs a Ray cluster"):
        validate(cfg)


def test_multi_node_dry_run_outside_a_cluster_makes_the_script_ask_for_the_head(verl_cfg, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = verl_cfg("rl.dry_run=true", f"rl.init_checkpoint={shared_tiny_lm()}", "rl.verl.nnodes=2")
    out = run_rl(cfg).path
    script = (out / "launch.sh").read_text().splitlines()
    assert script[6] == 'export RAY_ADDRESS="${RAY_ADDRESS:?set RAY_ADDRESS to the Ray head host:port}"'


def test_metrics_from_verls_console_log():
    text = ("(TaskRunner pid=1) step:1 - critic/score/mean:0.25 - response_length/mean:812.5 - actor/kl_loss:0.0\n"
            "noise\n(TaskRunner pid=1) step:2 - critic/score/mean:0.5 - val-core/countdown/reward/mean@1:0.4\n")
    m = vr.metrics_from_log(text)
    assert m["critic/score/mean"] == {"first": 0.25, "last": 0.5, "points": 2, "curve": [[1, 0.25], [2, 0.5]]}
    assert m["val"] == [[2, "val-core/countdown/reward/mean@1", 0.4]] and m["steps"] == 2


def test_last_checkpoint_follows_verls_tracker(tmp_path):
    (tmp_path / "global_step_50" / "actor").mkdir(parents=True)
    (tmp_path / vr.TRACKER_FILE).write_text("50")
    assert vr.last_checkpoint(tmp_path) == (50, tmp_path / "global_step_50" / "actor")
    (tmp_path / vr.TRACKER_FILE).unlink()
    with pytest.raises(SkillFactoryError, match="wrote no checkpoint"):
        vr.last_checkpoint(tmp_path)
