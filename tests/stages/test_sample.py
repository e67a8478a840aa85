"""The sample stage: rows and manifest, cache and fingerprints, kill-and-resume, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import skill_factory.stages  # noqa: F401 - registers the stages
from skill_factory import rawdata as rd
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError
from skill_factory.generation import register_backend
from skill_factory.pipeline import MANIFEST, REGISTRY, Runner, config_slice, fingerprint
from skill_factory.stages import sample as sample_stage
from skill_factory.tasks.config import get_task
from tiny_lm import ScriptedBackend, shared_tiny_lm

STAGES = {name: REGISTRY[name] for name in ("sample", "reflect")}
SMALL = ("sample=tiny", "reflect=tiny", "sample.num_questions=6", "sample.shard_size=2", "sample.n=2",
         "sample.max_new_tokens=8", "reflect.max_new_tokens=8", "reflect.k=2", "reflect.shard_size=20")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model is fastest on one thread, and the machine is shared
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cfg_for(make_cfg):
    def make(*overrides, model=None):
        path = model or str(shared_tiny_lm())
        return make_cfg("model=tiny", f"model.path={path}", *SMALL, *overrides)

    return make


def run(cfg):
    runner = Runner(cfg, Path(cfg.paths.artifacts), registry=STAGES)
    return runner.run(), runner


def fp(cfg, name="sample"):
    st = REGISTRY[name]
    return fingerprint(st, config_slice(cfg, st.config_keys), {})


def shard_bytes(art):
    return {p.name: p.read_bytes() for p in sorted((art.path / "data").glob("*.parquet"))}


def test_rows_schema_and_manifest(cfg_for):
    cfg = cfg_for("stages=[sample]")
    validate(cfg)
    arts, runner = run(cfg)
    art = arts["sample"]
    assert runner.record.entries["sample"]["status"] == "produced"
    assert sorted(p.name for p in (art.path / "data").iterdir()) == [
        f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert not (art.path / "tmp").exists()
    table = rd.load_artifact(art.path)
    variants = list(cfg.prompts.variants)
    assert table.num_rows == 6 * len(variants) * 2
    row = table[0]
    task = get_task(cfg.task)
    q = task.questions("train", 1, seed=cfg.seed)[0]
    assert row["question"] == task.render(q, cfg.prompts.variants[variants[0]])
    assert row["answer"] == q.gold and row["question_id"] == q.id
    assert row["prompt_variant"] == variants[0] and row["sample_index"] == 0
    assert isinstance(row[rd.COMPLETION], str)
    assert row[rd.IS_CORRECT] == [False] and len(row[rd.EXTRACTED]) == 1  # a random model
    assert json.loads(row["question_fields"]) == dict(q.fields)
    assert row["model"] == cfg.model.path and 1 <= row["num_tokens"] <= 8
    # the schema round-trips through the raw-dataset reader with default column names
    canon = rd.canonical_table(rd.arrow_table(table), rd.RawColumns(), ("question", "completion", "is_correct"),
                               ("answer", "prompt_variant", "extracted_answer"))
    assert canon.column_names == table.column_names
    counts = json.loads((art.path / MANIFEST).read_text())["counts"]
    assert counts["questions"] == 6 and counts["completions"] == table.num_rows and counts["shards"] == 3
    assert set(counts["accuracy_per_variant"]) == set(variants)
    assert counts["tokens_generated"] == sum(table["num_tokens"]) and counts["tokens_per_second"] > 0
    assert counts["accuracy"] == 0.0 and counts["model"] == cfg.model.path


def test_rerun_is_cached_and_fingerprint_covers_only_what_changes_the_data(cfg_for):
    cfg = cfg_for("stages=[sample]")
    run(cfg)
    _, runner = run(cfg)
    assert runner.record.entries["sample"]["status"] == "cached"
    base = fp(cfg)
    # layout and resource settings, and other stages' settings, do not change the data
    for same in ("sample.shard_size=5", "model.generation_batch_size=3", "reflect.k=7", "sft.learning_rate=0.5",
                 "task.test_size=17", "task.seed=5", "prompts.reflection='x {response}'", "model.gpu_memory_utilization=0.3"):
        assert fp(cfg_for("stages=[sample]", same)) == base, same
    for other in ("sample.n=3", "seed=1", "sample.temperature=0.5", "task.countdown.max_number=50",
                  "prompts.variants.original='{target} {numbers}'", "model.dtype=bfloat16", "sample.stop=[x]"):
        assert fp(cfg_for("stages=[sample]", other)) != base, other


def test_every_sample_setting_is_in_the_fingerprint_or_declared_layout():
    from dataclasses import fields

    from skill_factory.config.schema import SampleConfig

    keys = set(REGISTRY["sample"].config_keys)
    for f in fields(SampleConfig):
        assert f"sample.{f.name}" in keys or f.name in sample_stage.SAMPLE_LAYOUT_KEYS


def test_killed_run_resumes_and_matches_an_uninterrupted_run(cfg_for, make_cfg, monkeypatch, tmp_path):
    cfg = cfg_for("stages=[sample]")
    real_write, calls = rd.Shards.write, []

    def dying_write(self, index, table, stats):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        calls.append(index)
        return real_write(self, index, table, stats)

    monkeypatch.setattr(rd.Shards, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    out = next(Path(cfg.paths.artifacts, "sample").glob("*/"))
    assert not (out / MANIFEST).exists()
    assert len(list((out / "data").glob("*.parquet"))) == 2
    monkeypatch.setattr(rd.Shards, "write", real_write)
    written = []
    monkeypatch.setattr(rd.Shards, "write", lambda self, i, t, s: written.append(i) or real_write(self, i, t, s))
    arts, runner = run(cfg)
    assert runner.record.entries["sample"]["status"] == "resumed"
    assert written == [2]  # only the missing shard was generated
    assert json.loads((arts["sample"].path / MANIFEST).read_text())["counts"]["completions"] == 48

    # an uninterrupted run elsewhere writes byte-identical shards
    monkeypatch.setenv("SKILLFACTORY_HOME", str(tmp_path / "other"))
    fresh, _ = run(cfg_for("stages=[sample]"))
    assert fresh["sample"].path != arts["sample"].path
    assert shard_bytes(fresh["sample"]) == shard_bytes(arts["sample"])


def test_another_shard_size_gives_the_same_rows(cfg_for, monkeypatch, tmp_path):
    a, _ = run(cfg_for("stages=[sample]"))
    monkeypatch.setenv("SKILLFACTORY_HOME", str(tmp_path / "other"))
    b, _ = run(cfg_for("stages=[sample]", "sample.shard_size=4", "model.generation_batch_size=5"))
    assert rd.load_artifact(a["sample"].path).to_list() == rd.load_artifact(b["sample"].path).to_list()


def test_grading_and_accuracy_per_variant(cfg_for, monkeypatch):
    """A scripted model: correct under 'original' for sample 0, wrong otherwise."""
    cfg = cfg_for("stages=[sample]", "model.backend=scripted")
    task = get_task(cfg.task)
    solutions = {task.render(q, cfg.prompts.variants["original"]): q.meta["solution"]
                 for q in task.questions("train", 6, seed=cfg.seed)}

    def reply(user, j):
        if user in solutions and j == 0:
            return f"<answer>{solutions[user]}</answer>"
        return "<answer>1 + 1</answer>" if j else "no answer"

    monkeypatch.setattr(ScriptedBackend, "reply", staticmethod(reply))
    register_backend("scripted", ScriptedBackend)
    arts, _ = run(cfg)
    counts = arts["sample"].counts
    assert counts["accuracy_per_variant"]["original"] == 0.5
    assert all(v == 0.0 for k, v in counts["accuracy_per_variant"].items() if k != "original")
    assert counts["questions_with_correct"] == 6 and counts["questions_with_correct_and_incorrect"] == 6
    table = rd.load_artifact(arts["sample"].path)
    first = table[0]
    assert first[rd.IS_CORRECT] == [True] and first[rd.EXTRACTED] == [solutions[first["question"]]]
    assert table[4][rd.EXTRACTED] == [None]  # 'no answer' under another variant, sample 0
    assert counts["answered_rate"] == round(1 - 24 / 48, 4) + round(6 / 48, 4)


def test_config_checks(cfg_for):
    extra = [f"+prompts.variants.{name}=y" for name in "bcde"]
    bad = cfg_for("stages=[sample]", "+prompts.variants.a='x {nope}'", *extra,
                  "sample.num_questions=9000", "sample.max_new_tokens=5000", "sample.stop=['']")
    with pytest.raises(ConfigError) as err:
        validate(bad)
    msg = str(err.value)
    for key in ("prompts.variants: has 9 variants", "prompts.variants.a: unknown placeholder(s) {nope}",
                "sample.num_questions: 9000 is more than", "sample.max_new_tokens: 5000 leaves no room",
                "sample.stop[0]: is an empty string"):
        assert key in msg


def test_cli_sample_then_reflect_rerun_does_nothing(tmp_path):
    """``skillfactory stages=[sample,reflect]`` as a user runs it, twice."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLFACTORY_", "WANDB_"))}
    args = [sys.executable, "-m", "skill_factory.cli", "stages=[sample,reflect]", "model=tiny",
            f"model.path={shared_tiny_lm()}", *SMALL]
    first = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert "sample: producing" in log and "reflect: producing" in log and "tok/s" in log
    second = subprocess.run(args + ["hydra.run.dir=outputs/runs/again"], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "producing" not in log and log.count("reusing finished artifact") == 2
    record = json.loads((tmp_path / "outputs/runs/again/artifacts.json").read_text())
    assert {k: v["status"] for k, v in record.items()} == {"sample": "cached", "reflect": "cached"}
    for stage in ("sample", "reflect"):
        assert pq.read_table(next(Path(record[stage]["path"], "data").glob("*.parquet"))).num_rows > 0
