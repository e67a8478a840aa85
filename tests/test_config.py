"""The config spine: every file composes and validates; typos and bad values fail early."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONF, REPO, compose_cfg
from skill_factory.config.load import to_typed
from skill_factory.config.schema import GROUP_SCHEMAS, SCHEMA_NAME
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError


def group_options():
    """Every YAML option under conf/, found by walking the tree (never a hand-written list),
    as (group, option) with nested folders kept in the option: ("experiment", "paper/star")."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF).with_suffix("")
        if rel.parts[0] == "hydra" or len(rel.parts) == 1:
            continue
        found.append((rel.parts[0], "/".join(rel.parts[1:])))
    return found


def test_walk_finds_every_group_and_nested_files():
    assert set(GROUP_SCHEMAS) <= {g for g, _ in group_options()}
    on_disk = [p for p in CONF.rglob("*.yaml") if p.relative_to(CONF).parts[0] != "hydra"]
    assert len(group_options()) == len(on_disk) - 1  # all but config.yaml


def required_inputs(group: str, option: str) -> list[str]:
    """Overrides for the values an option file leaves to the user (``???``), such as
    experiment/paper/distill_byo's ``sft.dataset``: each gets a hub-id-shaped placeholder
    (checked offline), so the rest of the file is still composed and validated."""
    path = CONF / group / f"{option}.yaml"
    prefix = "" if path.read_text().startswith("# @package _global_") else f"{group}."
    node = OmegaConf.load(path)
    out = [f"{prefix}{key}=placeholder/{key.split('.')[-1]}" for key in sorted(OmegaConf.missing_keys(node))]
    for entry in node.get("defaults", []):  # an option built on another of its group (tiny/* twins)
        if isinstance(entry, str) and entry.startswith(f"/{group}/"):
            out += required_inputs(group, entry[len(group) + 2:])
    return out


# a GPU recipe (a file naming a hub model) validates here as a dry run: the sft and rl stages'
# own checks otherwise ask for GPUs this machine may not have
DRY_RUN = ("sft.dry_run=true", "rl.dry_run=true")
# presets sized for the paper's GPUs (sample=default, sft=paper_full, eval=countdown, ...) do not
# fit the tiny default model; they are validated on the paper's main model instead
GPU_MODEL = "qwen2_5_1_5b_instruct"


@pytest.mark.parametrize("group,option", group_options())
def test_every_config_file_composes_and_validates(group, option, make_cfg):
    from test_experiments import recipe_overrides

    importlib.import_module("skill_factory.stages")  # the real stage checks, whatever ran before
    overrides = [f"{group}={option}"]
    if group == "model" and option != "tiny":  # as the command the model file opens with
        overrides += recipe_overrides(option)
    inputs = required_inputs(group, option)
    if inputs:  # a file's required values: left out, they and only they are named
        with pytest.raises(ConfigError) as info:
            make_cfg(*overrides)
        assert sorted(p.key for p in info.value.problems) == sorted(i.split("=")[0] for i in inputs)
    overrides += inputs
    cfg = make_cfg(*overrides)
    if not cfg.sft.use_cpu:
        cfg = make_cfg(*overrides, *DRY_RUN)
    try:
        validate(cfg)
    except ConfigError:
        if group in ("model", "experiment") or cfg.model.name != "tiny":
            raise  # these name their model
        validate(make_cfg(*overrides, f"model={GPU_MODEL}", *DRY_RUN))


@pytest.mark.parametrize("group", sorted(GROUP_SCHEMAS))
def test_group_options_inherit_their_schema(group):
    for path in sorted((CONF / group).rglob("*.yaml")):
        text = path.read_text()
        assert text.startswith("#"), f"{path} must open with a comment giving its run command"
        assert f"- {SCHEMA_NAME}" in text, f"{path} must list '{SCHEMA_NAME}' in its defaults"


def test_default_config_is_typed_and_valid(make_cfg):
    cfg = make_cfg()
    validate(cfg)
    assert cfg.model.name == "tiny"
    assert type(cfg.sft).__name__ == "SFTConfig"
    assert Path(cfg.paths.artifacts).is_absolute()


def test_misspelled_key_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="lerning_rate"):
        compose_cfg(["sft.lerning_rate=1"])


def test_wrong_type_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="sample.n"):
        compose_cfg(["sample.n=many"])


def test_plus_override_past_the_schema_is_rejected(make_cfg):
    with pytest.raises(ConfigError, match="sft.lerning_rate: not a field of SFTConfig"):
        make_cfg("+sft.lerning_rate=1")


def test_missing_required_value_is_named(make_cfg):
    with pytest.raises(ConfigError, match=r"model\.name: required value is missing"):
        make_cfg("model.name=???")


def test_a_files_required_value_survives_the_merge(make_cfg):
    """``sft.dataset: ???`` in distill_byo: a plain merge would keep the schema's null (train on
    the traces stage, i.e. run the whole pipeline instead of the distillation)."""
    assert OmegaConf.is_missing(compose_cfg(["experiment=paper/distill_byo"]).sft, "dataset")
    with pytest.raises(ConfigError) as info:
        make_cfg("experiment=paper/distill_byo")
    assert [p.key for p in info.value.problems] == ["sft.dataset"]
    assert "sft.dataset=..." in str(info.value)
    cfg = make_cfg("experiment=paper/distill_byo", "sft.dataset=path/to/traces.parquet")
    assert cfg.sft.dataset == "path/to/traces.parquet"


def test_any_config_file_can_require_a_value_and_a_later_one_supply_it(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "sft" / "byo.yaml").write_text("# yours\ndefaults:\n  - _schema\n  - _self_\ndataset: ???\n")
    (conf / "model" / "mine.yaml").write_text("# mine\ndefaults:\n  - _schema\n  - _self_\nname: mine\npath: ???\n")
    # over a value an earlier file (the sample preset) set, not only over a schema default
    (conf / "experiment" / "strict.yaml").write_text("# @package _global_\nsample:\n  n: ???\n")
    # debug/ merges after every group above
    (conf / "debug" / "give.yaml").write_text(
        "# @package _global_\nsft:\n  dataset: d\nmodel:\n  path: p\nsample:\n  n: 3\n")

    def missing(*overrides):
        try:
            cfg = to_typed(compose_cfg(overrides, conf), run_dir=tmp_path / "run")
        except ConfigError as exc:
            return [p.key for p in exc.problems]
        return cfg

    assert missing("sft=byo") == ["sft.dataset"]
    assert missing("model=mine") == ["model.path"]
    assert missing("experiment=strict") == ["sample.n"]
    assert missing("sft=byo", "model=mine", "experiment=strict") == ["model.path", "sample.n", "sft.dataset"]
    cfg = missing("sft=byo", "model=mine", "experiment=strict", "debug=give")
    assert (cfg.sft.dataset, cfg.model.path, cfg.sample.n) == ("d", "p", 3)
    cfg = missing("sft=byo", "model=mine", "experiment=strict", "sft.dataset=x", "model.path=y", "sample.n=2")
    assert (cfg.sft.dataset, cfg.model.path, cfg.sample.n) == ("x", "y", 2)


def test_validate_lists_every_problem_at_once(make_cfg):
    cfg = make_cfg("sample.n=0", "sft.warmup_ratio=2", "traces.formats=[*C,bogus]",
                   "rl.train_batch_size=100", "rl.ppo_mini_batch_size=32", "model.backend=tpu",
                   "eval.n=4", "stages=[nope]", "reflect.banned_patterns=['\\b(unclosed']")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    keys = [p.key for p in info.value.problems]
    assert keys == ["model.backend", "sample.n", "reflect.banned_patterns[0]",
                    "traces.formats[1]", "sft.warmup_ratio", "rl.ppo_mini_batch_size",
                    "eval.n", "stages[0]"]
    assert all(p.fix for p in info.value.problems)


def test_paths_follow_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLFACTORY_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("SKILLFACTORY_ARTIFACTS", str(tmp_path / "cache"))
    monkeypatch.delenv("SKILLFACTORY_RUNS", raising=False)
    cfg = to_typed(compose_cfg(), run_dir=tmp_path / "r")
    assert cfg.paths.artifacts == str(tmp_path / "cache")
    assert cfg.paths.runs == str(tmp_path / "h" / "runs")
    assert cfg.paths.run_dir == str(tmp_path / "r")


def _cli(args, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLFACTORY_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "skill_factory.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_prints_composed_config(tmp_path):
    out = _cli(["--cfg", "job"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "learning_rate:" in out.stdout and "stages:" in out.stdout


def test_cli_typo_exits_nonzero_naming_the_key(tmp_path):
    out = _cli(["sft.lerning_rate=1"], tmp_path)
    assert out.returncode != 0
    assert "sft.lerning_rate" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_semantic_errors_one_message_exit_2(tmp_path):
    out = _cli(["sample.n=0", "sft.warmup_ratio=2"], tmp_path)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "2 config problem(s)" in text and "sample.n" in text and "sft.warmup_ratio" in text
    assert "Traceback" not in text
    assert not (tmp_path / "outputs" / "artifacts").exists()


def test_cli_required_value_one_message_exit_2(tmp_path):
    out = _cli(["experiment=paper/distill_byo"], tmp_path)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "1 config problem(s)" in text and "sft.dataset: required value is missing" in text
    assert "sft.dataset=..." in text and "Traceback" not in text
    assert not (tmp_path / "outputs" / "artifacts").exists()
    shown = _cli(["experiment=paper/distill_byo", "--cfg", "job"], tmp_path)
    assert shown.returncode == 0 and "dataset:" in shown.stdout, shown.stderr
    given = _cli(["experiment=paper/distill_byo", "sft.dataset=path/to/traces.parquet", "stages=[]"], tmp_path)
    assert given.returncode == 0, given.stderr
    assert "nothing to run" in given.stdout + given.stderr


def test_lock_holds_the_pyproject_engine_pins():
    """The lock the set-up script installs lists the engine pins of pyproject.toml."""
    lock = (REPO / "launch" / "requirements-cpu.lock").read_text()
    for pin in ("torch==2.13.0", "transformers==5.5.4", "llamafactory==0.9.5", "verl==0.9.1",
                "trl==0.24.0", "datasets==4.0.0", "hydra-core==1.3.8", "omegaconf==2.3.0"):
        assert f"\n{pin}\n" in lock, pin
        assert f'"{pin}"' in (REPO / "pyproject.toml").read_text(), pin
