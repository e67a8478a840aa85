"""The reflect stage: verdict filter, rows and manifest, published inputs, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import skill_factory.stages  # noqa: F401 - registers the stages
from skill_factory import rawdata as rd
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError, SkillFactoryError
from skill_factory.generation import register_backend
from skill_factory.pipeline import MANIFEST, REGISTRY, Runner, config_slice, fingerprint, plan
from skill_factory.stages import reflect as reflect_stage
from skill_factory.stages.reflect import compile_banned, judge
from tiny_lm import ScriptedBackend, shared_tiny_lm

STAGES = {name: REGISTRY[name] for name in ("sample", "reflect")}
SMALL = ("sample=tiny", "reflect=tiny", "sample.num_questions=4", "sample.shard_size=2", "sample.n=2",
         "sample.max_new_tokens=8", "reflect.max_new_tokens=8", "reflect.k=3", "reflect.shard_size=12")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cfg_for(make_cfg):
    def make(*overrides):
        return make_cfg("model=tiny", f"model.path={shared_tiny_lm()}", *SMALL, *overrides)

    return make


def run(cfg):
    runner = Runner(cfg, Path(cfg.paths.artifacts), registry=STAGES)
    return runner.run(), runner


# --- the verdict filter --------------------------------------------------------------------

@pytest.mark.parametrize("text,verdict", [
    ("12 + 5 = 17 <verdict>Correct</verdict>", True),
    ("<verdict>Incorrect</verdict>", False),
    ("<verdict> correct </verdict>", True),             # trimmed
    ("<VERDICT>INCORRECT</VERDICT>", False),            # case-insensitive tag and word
    ("<verdict>\nCorrect\n</verdict>", True),
    ("<verdict>Correct</verdict> then <verdict>Incorrect</verdict>", True),   # the first tag decides
    ("<verdict>Incorrect</verdict> <verdict>Correct</verdict>", False),
    ("no tag at all: Correct", None),
    ("<verdict>Maybe</verdict>", None),                 # other words are no verdict
    ("<verdict>Correct", None),                         # unclosed
    ("<verdict></verdict>", None),
    ("", None),
])
def test_verdict_parsing_and_keeping(text, verdict):
    verdicts, banned, kept = judge([text], correct=True, banned=None)
    assert verdicts == [verdict] and banned == [False]
    assert kept == [verdict is True]
    assert judge([text], correct=False, banned=None)[2] == [verdict is False]


def test_banned_patterns_match_whole_words_only():
    banned = compile_banned(["idea", "fast"])
    texts = ["Good idea. <verdict>Correct</verdict>", "An ideal check <verdict>Correct</verdict>",
             "breakfast <verdict>Correct</verdict>", "FAST check <verdict>Correct</verdict>"]
    verdicts, hits, kept = judge(texts, correct=True, banned=banned)
    assert verdicts == [True] * 4
    assert hits == [True, False, False, True]
    assert kept == [False, True, True, False]
    assert compile_banned([]) is None


# --- the stage -----------------------------------------------------------------------------

def test_reflect_on_the_sample_artifact(cfg_for):
    cfg = cfg_for("stages=[reflect]")
    validate(cfg)
    assert plan(cfg, STAGES) == ["sample", "reflect"]
    arts, _ = run(cfg)
    sample_rows = rd.load_artifact(arts["sample"].path)
    table = rd.load_artifact(arts["reflect"].path)
    assert table.num_rows == sample_rows.num_rows == 4 * 4 * 2
    assert table.column_names[:len(sample_rows.column_names)] == sample_rows.column_names
    assert table[rd.COMPLETION] == sample_rows[rd.COMPLETION]
    for row in table:
        assert len(row[rd.REFLECTIONS]) == len(row[rd.REFLECTION_VERDICTS]) == len(row[rd.REFLECTION_KEPT]) == 3
        assert row[rd.REFLECTION_VERDICTS] == [None] * 3 and row[rd.NUM_KEPT] == 0  # a random model
    counts = json.loads((arts["reflect"].path / MANIFEST).read_text())["counts"]
    assert counts["rows"] == 32 and counts["reflections"] == 96 and counts["shards"] == 3
    assert counts["kept_rate"] == 0.0 and counts["verdict_rate"] == 0.0 and counts["tokens_generated"] > 0
    assert counts["input"] == str(arts["sample"].path)
    assert set(counts["input_accuracy_per_variant"]) == set(cfg.prompts.variants)


def test_fingerprint_follows_reflect_settings_and_the_sample_upstream(cfg_for):
    st = REGISTRY["reflect"]

    def fp(cfg):
        return fingerprint(st, config_slice(cfg, st.config_keys), {})

    base = fp(cfg_for("stages=[reflect]"))
    for same in ("sample.n=5", "reflect.shard_size=3", "model.generation_batch_size=2", "sft.learning_rate=1"):
        assert fp(cfg_for("stages=[reflect]", same)) == base, same   # sample.n reaches it via upstream
    for other in ("reflect.k=2", "reflect.banned_patterns=[idea]", "prompts.reflection='{response} ok?'",
                  "seed=3", "reflect.temperature=0.3"):
        assert fp(cfg_for("stages=[reflect]", other)) != base, other
    from dataclasses import fields

    from skill_factory.config.schema import ReflectConfig

    for f in fields(ReflectConfig):
        assert f"reflect.{f.name}" in st.config_keys or f.name in reflect_stage.REFLECT_LAYOUT_KEYS


def scripted_verdicts(monkeypatch) -> list[str]:
    """Reflections: Correct, Incorrect, and a banned word, for every completion.

    Returns the list the user prompts the model saw are appended to.
    """
    replies = ["ok <verdict>Correct</verdict>", "<verdict>Incorrect</verdict>", "an idea <verdict>Correct</verdict>"]
    seen: list[str] = []

    def reply(user, j):
        seen.append(user)
        return replies[j % 3]

    monkeypatch.setattr(ScriptedBackend, "reply", staticmethod(reply))
    register_backend("scripted", ScriptedBackend)
    return seen


def published(tmp_path) -> Path:
    """A raw dataset in the paper's alternative naming, with a list-shaped completion column."""
    rows = [{"question": f"Use [{i}, 1] to make {i + 1}.", "answer": str(i + 1), "prompt_type": "original",
             "model_responses__mutated_prompts": [f"<answer>{i} + 1</answer>"],
             rd.IS_CORRECT: [i % 2 == 0], rd.EXTRACTED: [f"{i} + 1"], "source_id": i} for i in range(5)]
    path = tmp_path / "published.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_published_dataset_input_skips_sample_and_filters(cfg_for, tmp_path, monkeypatch):
    seen = scripted_verdicts(monkeypatch)
    src = published(tmp_path)
    cfg = cfg_for("stages=[reflect]", f"reflect.input_dataset={src}", "model.backend=scripted",
                  "reflect.banned_patterns=[idea]", "reflect.shard_size=2")
    assert plan(cfg, STAGES) == ["reflect"]
    arts, _ = run(cfg)
    # the model saw the reflection prompt with the row's question and completion
    assert seen[0] == "Check this answer.\nUse [0, 1] to make 1.\n<answer>0 + 1</answer>"
    assert "sample" not in arts
    table = rd.load_artifact(arts["reflect"].path)
    assert table.num_rows == 5
    assert table[rd.COMPLETION] == [f"<answer>{i} + 1</answer>" for i in range(5)]
    assert table[rd.PROMPT_VARIANT] == ["original"] * 5 and table["source_id"] == list(range(5))
    for i, row in enumerate(table):
        correct = i % 2 == 0
        assert row[rd.REFLECTION_VERDICTS] == [True, False, True]
        assert row[rd.REFLECTION_BANNED] == [False, False, True]
        assert row[rd.REFLECTION_KEPT] == [correct, not correct, False]
        assert row[rd.NUM_KEPT] == 1
    counts = arts["reflect"].counts
    assert counts["reflections"] == 15 and counts["kept_reflections"] == 5 and counts["banned_reflections"] == 5
    # verdicts agree with the verifier 2 of 3 times on the 3 correct rows, 1 of 3 on the 2 others
    assert counts["verdict_accuracy"] == round(8 / 15, 4)
    assert counts["verdict_accuracy_on_correct"] == round(2 / 3, 4)  # Correct, Incorrect, Correct(banned)
    assert counts["verdict_accuracy_on_incorrect"] == round(1 / 3, 4)
    assert counts["rows_with_kept"] == 5 and counts["input"] == str(src)

    # rewriting the local file changes the fingerprint: no stale reuse
    again = cfg_for("stages=[reflect]", f"reflect.input_dataset={src}", "model.backend=scripted",
                    "reflect.banned_patterns=[idea]", "reflect.shard_size=2")
    st = REGISTRY["reflect"]
    before = fingerprint(st, config_slice(again, st.config_keys), {})
    import os
    import time

    time.sleep(0.01)
    os.utime(src)
    assert fingerprint(st, config_slice(again, st.config_keys), {}) != before


def test_bad_columns_fail_before_any_generation(cfg_for, tmp_path, monkeypatch):
    src = published(tmp_path)

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the columns were checked")

    import skill_factory.generation as gen

    monkeypatch.setattr(gen, "make_backend", no_model)
    cfg = cfg_for("stages=[reflect]", f"reflect.input_dataset={src}", "reflect.columns.is_correct=verdict",
                  "reflect.columns.question=answer")
    with pytest.raises(SkillFactoryError) as err:
        run(cfg)
    msg = str(err.value)
    assert "reflect.columns.is_correct: column 'verdict' not found" in msg
    assert "reflect.columns.question" not in msg  # 'answer' is a string column: a valid choice
    cfg = cfg_for("stages=[reflect]", f"reflect.input_dataset={src}", "reflect.columns.completion=source_id")
    with pytest.raises(SkillFactoryError, match="reflect.columns.completion: column 'source_id' has type int64"):
        run(cfg)


def test_killed_reflect_resumes(cfg_for, monkeypatch, tmp_path):
    scripted_verdicts(monkeypatch)
    src = published(tmp_path)
    cfg = cfg_for("stages=[reflect]", f"reflect.input_dataset={src}", "model.backend=scripted", "reflect.shard_size=2")
    real_write = rd.Shards.write
    calls = []

    def dying(self, index, table, stats):
        if len(calls) == 1:
            raise KeyboardInterrupt("simulated kill")
        calls.append(index)
        return real_write(self, index, table, stats)

    monkeypatch.setattr(rd.Shards, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(rd.Shards, "write", real_write)
    ScriptedBackend.calls.clear()
    arts, runner = run(cfg)
    assert runner.record.entries["reflect"]["status"] == "resumed"
    assert ScriptedBackend.calls == [2, 1]  # shards 1 and 2 (rows 2-3, row 4) only
    assert rd.load_artifact(arts["reflect"].path).num_rows == 5


def test_config_checks(cfg_for, tmp_path):
    bad = cfg_for("stages=[reflect]", "prompts.reflection='{question} {answer}'", "reflect.stop=['']",
                  f"reflect.input_dataset={tmp_path}/missing.parquet", "reflect.max_new_tokens=4096")
    with pytest.raises(ConfigError) as err:
        validate(bad)
    msg = str(err.value)
    for key in ("prompts.reflection: unknown placeholder(s) {answer}", "prompts.reflection: does not show the response",
                "reflect.stop[0]: is an empty string", "reflect.input_dataset: no such file or folder",
                "reflect.max_new_tokens: 4096 leaves no room"):
        assert key in msg


def test_empty_input_gives_an_empty_loadable_dataset(cfg_for, tmp_path, monkeypatch):
    scripted_verdicts(monkeypatch)
    src = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema(
        [("question", pa.string()), (rd.COMPLETION, pa.string()), (rd.IS_CORRECT, pa.list_(pa.bool_()))])), src)
    arts, _ = run(cfg_for("stages=[reflect]", f"reflect.input_dataset={src}", "model.backend=scripted"))
    table = rd.load_artifact(arts["reflect"].path)
    assert table.num_rows == 0 and rd.REFLECTION_KEPT in table.column_names
    assert arts["reflect"].counts["rows"] == 0 and arts["reflect"].counts["kept_rate"] == 0.0
