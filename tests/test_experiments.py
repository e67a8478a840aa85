"""The paper's experiments as config: every experiment composes with every model file it can
be combined with and validates, each says what the paper's experiment is, and each tiny twin
is its paper experiment on the tiny model, nothing else.

Experiments and models are found by walking ``conf/experiment`` and ``conf/model``. paper/*
runs on every hub model (validated as a dry run: the sft and rl stages' own checks otherwise
ask for GPUs), tiny/* on the tiny model, for real.
"""
from __future__ import annotations

import importlib
import re
import shlex

import pytest
from omegaconf import OmegaConf

from conftest import CONF, REPO, compose_cfg
from skill_factory.config.validate import validate

EXPERIMENTS = CONF / "experiment"
DRY_RUN = ("sft.dry_run=true", "rl.dry_run=true")
# what a user supplies for a value an experiment leaves required (???)
USER_INPUTS = {"sft.dataset": "my-user/my-sharegpt-traces"}


def experiments(family: str) -> list[str]:
    return sorted(p.stem for p in (EXPERIMENTS / family).glob("*.yaml"))


def hub_models() -> list[str]:
    """Model files naming a hub id or a path (every model but the ones this project builds)."""
    return sorted(p.stem for p in (CONF / "model").glob("*.yaml") if OmegaConf.load(p).get("path"))


def recipe_overrides(model: str) -> list[str]:
    """The overrides of the command a model file opens with (``skillfactory
    experiment=paper/skillfactory model=<it> ...``): what the paper's recipe needs on that model,
    e.g. shorter responses for a 4k context. The tests run the command as written."""
    head = (CONF / "model" / f"{model}.yaml").read_text().split("defaults:", 1)[0]
    m = re.search(rf"^#.*?skillfactory experiment=paper/skillfactory model={model}(?P<rest>( .*)?)$", head, re.M)
    assert m, f"conf/model/{model}.yaml must open with the command that runs the paper's recipe on it"
    return shlex.split(m["rest"])


def required(family: str, name: str) -> list[str]:
    """What the user supplies for the values an experiment leaves to them (``???`` in the file,
    such as ``sft.dataset`` of distill_byo)."""
    cfg = OmegaConf.load(EXPERIMENTS / family / f"{name}.yaml")
    if family == "tiny":  # a twin names no values of its own
        cfg = OmegaConf.load(EXPERIMENTS / "paper" / f"{name}.yaml")
    missing = OmegaConf.missing_keys(cfg)
    return [f"{key}={value}" for key, value in USER_INPUTS.items() if key in missing]


@pytest.fixture(autouse=True)
def _stages():
    importlib.import_module("skill_factory.stages")  # validate with the real stage checks


# What each experiment of the paper is (method.md section 8): the stages it runs, the trace
# formats its SFT data has, where RL starts, and whose SFT data it uses.
PAPER = {
    "skillfactory": (["sample", "reflect", "traces", "sft", "rl", "eval"], ["*C_full"], None, None),
    "rl_only": (["rl", "eval"], None, "base", None),
    "star": (["sample", "reflect", "traces", "sft", "rl", "eval"], ["0C"], None, None),
    "distill_byo": (["sft", "rl", "eval"], None, None, USER_INPUTS["sft.dataset"]),
    "no_reflection": (["sample", "reflect", "traces", "sft", "rl", "eval"], ["no_reflection"], None, None),
    "no_sample_order": (["sample", "reflect", "traces", "sft", "rl", "eval"], ["random"], None, None),
    "no_prompt_diversity": (["sample", "reflect", "traces", "sft", "rl", "eval"], ["*C_full"], None, None),
}


def test_the_walk_finds_the_paper_experiments_and_their_twins():
    assert experiments("paper") == sorted(PAPER)
    assert experiments("tiny") == sorted(PAPER)
    assert {"qwen2_5_0_5b_instruct", "qwen2_5_1_5b_instruct", "qwen2_5_3b_instruct", "qwen2_5_7b_instruct",
            "llama3_2_3b_instruct", "olmo2_7b_instruct"} <= set(hub_models())


@pytest.mark.parametrize("family,name", [(f, n) for f in ("paper", "tiny") for n in experiments(f)])
def test_experiment_files_open_with_their_run_command(family, name):
    lines = (EXPERIMENTS / family / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    header = [line for line in lines if line.startswith("#")]
    assert any(re.match(rf"#\s+skillfactory (-m )?experiment={family}/{name}( |$)", line) for line in header)


@pytest.mark.parametrize("model", hub_models())
@pytest.mark.parametrize("name", experiments("paper"))
def test_paper_experiment_composes_and_validates_on_every_hub_model(name, model, make_cfg):
    cfg = make_cfg(f"experiment=paper/{name}", f"model={model}", *recipe_overrides(model),
                   *required("paper", name), *DRY_RUN)
    validate(cfg)
    stages, formats, init, dataset = PAPER[name]
    assert cfg.model.name == model
    assert cfg.stages == stages
    if formats is not None:
        assert cfg.traces.formats == formats
    assert cfg.rl.init_checkpoint == init
    assert cfg.sft.dataset == dataset
    # a hub model trains on GPUs with the paper's engines
    assert (cfg.sft.use_cpu, cfg.rl.backend) == (False, "verl")
    if name == "no_prompt_diversity":
        assert cfg.traces.variants == ["original"]


def test_paper_experiments_default_to_the_papers_main_model(make_cfg):
    for name in experiments("paper"):
        cfg = make_cfg(f"experiment=paper/{name}", *required("paper", name), *DRY_RUN)
        assert cfg.model.name == "qwen2_5_1_5b_instruct", name


@pytest.mark.parametrize("name", experiments("tiny"))
def test_tiny_experiment_composes_and_validates_on_cpu(name, make_cfg):
    cfg = make_cfg(f"experiment=tiny/{name}", *required("tiny", name))
    validate(cfg)
    assert cfg.model.name == "tiny"
    assert (cfg.sft.use_cpu, cfg.rl.backend) == (True, "trl")


@pytest.mark.parametrize("name", experiments("tiny"))
def test_tiny_twin_is_the_paper_experiment_on_the_tiny_model(name):
    inputs = required("tiny", name)
    twin = compose_cfg([f"experiment=tiny/{name}", *inputs])
    paper_on_tiny = compose_cfg([f"experiment=paper/{name}", "model=tiny", *inputs])
    assert OmegaConf.to_container(twin) == OmegaConf.to_container(paper_on_tiny)


@pytest.mark.parametrize("family", ["paper", "tiny"])
def test_distill_byo_stops_before_any_work_without_a_dataset(family, make_cfg):
    from skill_factory.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        make_cfg(f"experiment={family}/distill_byo", *DRY_RUN)
    assert [p.key for p in info.value.problems] == ["sft.dataset"]
    assert "sft.dataset=" in str(info.value)


@pytest.mark.parametrize("model", hub_models())
def test_model_resources_fit_the_paper_recipe(model, make_cfg):
    """Sizes that verl and LLaMA-Factory would reject are caught here, not on the cluster."""
    cfg = make_cfg("experiment=paper/skillfactory", f"model={model}", *recipe_overrides(model), *DRY_RUN)
    m, r = cfg.model, cfg.model.resources
    assert r.sft_cutoff_len <= m.max_length
    assert r.gpus_per_node % r.rollout_tensor_parallel_size == 0
    assert r.gpus_per_node % m.tensor_parallel_size == 0
    assert 0 < r.rollout_gpu_memory_utilization < 1 and 0 < m.gpu_memory_utilization < 1
    assert r.zero_stage in (2, 3)


def _readme_commands(section: str) -> list[list[str]]:
    """The ``skillfactory`` commands (single runs) in a README section, as argument lists."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return [shlex.split(line)[1:] for line in body.splitlines()
            if line.startswith(".venv/bin/skillfactory ") and " -m " not in line]


def test_readme_lists_the_command_of_every_experiment_on_every_model():
    """The README's commands are the ones validated above, one per experiment and model."""
    listed = {tuple(c) for c in _readme_commands("Reproducing the paper")}
    expected = set()
    for model in hub_models():
        for name in experiments("paper"):
            args = [f"experiment=paper/{name}"]
            args += [] if model == "qwen2_5_1_5b_instruct" else [f"model={model}"]
            args += recipe_overrides(model)
            args += ["sft.dataset=path/to/traces.parquet"] if name == "distill_byo" else []
            expected.add(tuple(args))
        expected |= {(f"experiment=tiny/{name}", *(["sft.dataset=path/to/traces.parquet"] if name == "distill_byo"
                                                   else [])) for name in experiments("tiny")}
    assert listed == expected
