"""The traces stage: reflect artifact and published inputs, parquet output, manifest, push."""
from __future__ import annotations

import itertools
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_lm import ScriptedBackend, shared_tiny_lm

import skill_factory.stages
from skill_factory import rawdata as rd
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError, SkillFactoryError
from skill_factory.generation import register_backend
from skill_factory.pipeline import (
    MANIFEST,
    REGISTRY,
    Runner,
    config_slice,
    fingerprint,
    plan,
)
from skill_factory.stages import traces as traces_stage
from skill_factory.tracebuild import parse_trace

STAGES = {name: REGISTRY[name] for name in ("sample", "reflect", "traces")}
OK, BAD = "<verdict>Correct</verdict>", "<verdict>Incorrect</verdict>"
VARIANTS = ("original", "plan_and_execute", "alternatively", "rephrase")


def run(cfg, root=None):
    runner = Runner(cfg, Path(root or cfg.paths.artifacts), registry=STAGES)
    return runner.run(), runner


def data_file(art) -> Path:
    return Path(art.path) / traces_stage.DATA_FILE


def published(path: Path, questions: int = 6, seed: int = 0, shuffle: bool = False) -> Path:
    """A raw dataset in the paper's alternative naming: prompt_type, list-shaped completions."""
    rng = random.Random(seed)
    rows = []
    for q in range(questions):
        for v in VARIANTS:
            for j in range(2):
                correct = (q + j) % 2 == 0 or v == "original"
                verdicts = [OK if correct else BAD, BAD if correct else OK, OK if correct else BAD]
                rows.append({
                    "question": f"Use [{q}, 1, 2] to make {q + 3}.", "answer": str(q + 3), "prompt_type": v,
                    "model_responses__mutated_prompts": [f"{v} try {j} on {q}.\n<answer>{q} + 1 + 2</answer>"],
                    rd.IS_CORRECT: [correct], rd.EXTRACTED: [f"{q} + 1 + 2" if correct else "0"],
                    rd.REFLECTIONS: [f"check {k} of {v}/{j}/{q}: {t}" for k, t in enumerate(verdicts)],
                })
    if shuffle:
        rng.shuffle(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def pub(tmp_path):
    return published(tmp_path / "raw.parquet")


# --- published raw dataset in ------------------------------------------------------------


def test_published_dataset_in_parquet_dataset_out(make_cfg, pub):
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "traces.token_stats=false")
    validate(cfg)
    assert plan(cfg, STAGES) == ["traces"]  # no sample / reflect / model build
    arts, _ = run(cfg)
    art = arts["traces"]
    table = rd.load_artifact(art.path)  # the artifact is a parquet dataset in hub layout
    assert table.column_names == ["conversations", "format", "n_samples", "question_id", "completion_ids",
                                  "sample_correct"]
    assert set(table["format"]) == {"*C_full"} and table.num_rows == 6 * 5
    for row in table:
        user, assistant = row["conversations"]
        assert user["role"] == "user" and user["content"].startswith("Use [")
        parsed = parse_trace(assistant["content"])
        assert len(parsed.samples) == row["n_samples"] == len(row["completion_ids"])
        assert row["sample_correct"][-1]
    counts = json.loads((art.path / MANIFEST).read_text())["counts"]
    assert counts["input_source"] == str(pub) and counts["rows"] == 30
    assert counts["input"]["questions"] == 6 and counts["input"]["kept_reflections"] == 6 * 8 * 2
    assert counts["formats"]["*C_full"]["rows_by_n"] == {str(n): 6 for n in range(1, 6)}
    assert counts["chars"]["all"]["count"] == 30 and "tokens" not in counts
    _, again = run(cfg)
    assert again.record.entries["traces"]["status"] == "cached"


def test_identical_config_gives_byte_identical_parquet_whatever_the_row_order(make_cfg, tmp_path, pub):
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "traces.token_stats=false", "traces=mixed")
    first = data_file(run(cfg)[0]["traces"]).read_bytes()
    second = data_file(run(cfg, tmp_path / "elsewhere")[0]["traces"]).read_bytes()
    assert first == second
    mixed = published(tmp_path / "shuffled.parquet", shuffle=True, seed=5)
    other = make_cfg("stages=[traces]", f"traces.input_dataset={mixed}", "traces.token_stats=false", "traces=mixed")
    assert data_file(run(other)[0]["traces"]).read_bytes() == first
    reseeded = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "traces.token_stats=false",
                        "traces=mixed", "seed=1")
    assert data_file(run(reseeded)[0]["traces"]).read_bytes() != first


def test_the_four_released_formats_in_one_run(make_cfg, pub):
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "traces.token_stats=false",
                   "traces.formats=[0C,*C,*C*IC,*CC]", "traces.n_samples=4")
    art = run(cfg)[0]["traces"]
    table = rd.load_artifact(art.path)
    assert sorted(set(table["format"])) == ["*C", "*C*IC", "*CC", "0C"]
    f = art.counts["formats"]
    assert {k: v["rows"] for k, v in f.items()} == {"0C": 6, "*C": 6, "*C*IC": 6, "*CC": 6}


def test_column_mapping_and_one_error_per_column_problem(make_cfg, tmp_path):
    src = tmp_path / "renamed.parquet"
    table = pq.read_table(published(tmp_path / "raw.parquet"))
    table = table.rename_columns(["prompt" if c == "question" else "graded" if c == rd.IS_CORRECT else c
                                  for c in table.column_names])
    pq.write_table(table, src)
    good = make_cfg("stages=[traces]", f"traces.input_dataset={src}", "traces.token_stats=false",
                    "traces.columns.question=prompt", "traces.columns.is_correct=graded")
    assert rd.load_artifact(run(good)[0]["traces"].path).num_rows == 30
    bad = make_cfg("stages=[traces]", f"traces.input_dataset={src}", "traces.token_stats=false",
                   "traces.columns.reflections=answer")
    with pytest.raises(SkillFactoryError) as err:
        run(bad)
    msg = str(err.value)
    assert "3 column problem(s)" in msg
    for key in ("traces.columns.question: no column 'question'", "traces.columns.is_correct: no column",
                "traces.columns.reflections: column 'answer' has type string"):
        assert key in msg


def test_input_problems_are_reported_together_before_building(make_cfg, pub):
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "traces.token_stats=false",
                   "traces.variants=[original,nope]", "traces.distinct_variants=true", "traces.n_samples=3")
    with pytest.raises(SkillFactoryError) as err:
        run(cfg)
    msg = str(err.value)
    assert "2 input problem(s)" in msg
    assert "traces.variants: nope not in the input (its variants: alternatively, original, plan_and_execute, " \
           "rephrase)" in msg
    assert "traces.n_samples: 3 samples from distinct variants, but the input has 1 variant(s)" in msg


def test_a_format_without_traces_fails_and_leaves_no_artifact(make_cfg, tmp_path):
    rows = [{"question": "q", rd.COMPLETION: "<answer>1</answer>", rd.IS_CORRECT: [True],
             rd.REFLECTIONS: [OK]}]
    src = tmp_path / "one.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={src}", "traces.token_stats=false",
                   "traces.formats=[*C*IC]", "traces.n_samples=2")
    with pytest.raises(SkillFactoryError, match=r"format \*C\*IC yields no trace from 1 question\(s\) "
                                                r"\(skipped: no_incorrect=1\)"):
        run(cfg)
    assert not any((Path(cfg.paths.artifacts) / "traces").glob("*/manifest.json"))


def test_token_statistics_use_the_model_tokenizer_and_are_optional(make_cfg, pub, monkeypatch, caplog):
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", f"model.path={shared_tiny_lm()}")
    counts = run(cfg)[0]["traces"].counts
    tokens = counts["tokens"]
    assert tokens["all"]["count"] == 30 and 0 < tokens["all"]["mean"] < counts["chars"]["all"]["mean"]
    assert counts["lengths_counted_with"] == str(shared_tiny_lm())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "model.path=someone/not-cached-model")
    counts = run(offline)[0]["traces"].counts
    assert "tokens" not in counts and counts["rows"] == 30
    assert "token-length statistics skipped" in caplog.text


def test_fingerprint_follows_what_changes_the_output(make_cfg, pub):
    st = REGISTRY["traces"]

    def fp(*overrides):
        cfg = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", *overrides)
        return fingerprint(st, config_slice(cfg, st.config_keys), {})

    base = fp()
    for same in ("sft.learning_rate=1", "sample.n=7", "reflect.k=2", "model.generation_batch_size=3"):
        assert fp(same) == base, same
    for other in ("traces.formats=[0C]", "traces.n_samples=3", "seed=2", "phrases.ending=[Done:]",
                  "traces.subsample=5", "traces.columns.question=prompt", "reflect.banned_patterns=[idea]"):
        assert fp(other) != base, other
    from dataclasses import fields

    from skill_factory.config.schema import TracesConfig

    assert all(f"traces.{f.name}" in st.config_keys for f in fields(TracesConfig))


# --- configuration --------------------------------------------------------------------------


def test_config_checks_list_every_traces_problem(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cfg = make_cfg("stages=[traces]", "traces.formats=[*C,*C,*CC]", "traces.n_samples=1", "traces.random_n=true",
                   "phrases.ending=[]", "phrases.confirm=['two\nlines']")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    for key in ("traces.formats[1]: '*C' is listed twice", "traces.n_samples: *C*IC and *CC need at least 2",
                "traces.random_n: draws N in [2, traces.n_samples]", "phrases.ending: is empty",
                "phrases.confirm[0]: spans several lines"):
        assert key in msg, key
    # the stage's own checks (input path, hub repo and token) run once the sections are valid
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={tmp_path}/no.parquet", "traces.push_to_hub=not a repo")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    for key in ("traces.input_dataset: no such file or folder", "traces.push_to_hub: 'not a repo' is not a hub repo id",
                "traces.push_to_hub: HF_TOKEN is not set in the environment"):
        assert key in msg, key


def test_phrase_pools_are_a_config_group_that_can_be_overridden(make_cfg):
    cfg = make_cfg("phrases=default", "phrases.after_correct=[Fine so far.]")
    assert cfg.phrases.after_correct == ["Fine so far."] and len(cfg.phrases.ending) >= 7


def test_distinct_variants_beyond_the_run_s_variants_is_a_config_error(make_cfg):
    cfg = make_cfg("stages=[traces]", "model.path=x", "traces.distinct_variants=true", "traces.n_samples=5")
    with pytest.raises(ConfigError, match="traces.n_samples: 5 samples from distinct prompt variants, but only 4"):
        validate(cfg)


# --- hub push -------------------------------------------------------------------------------------


def test_push_to_hub_uses_the_environment_token_and_writes_it_nowhere(make_cfg, pub, monkeypatch, tmp_path):
    import datasets

    secret = "hf_" + "s3cr3tT0kenValue" * 2
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(rd, "hub_reachable", lambda timeout=3.0: True)
    pushed = []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub",
                        lambda self, repo_id, **kw: pushed.append((repo_id, self.num_rows, kw)))
    cfg = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "traces.token_stats=false",
                   "traces.push_to_hub=me/skillfactory-sft")
    validate(cfg)
    art = run(cfg)[0]["traces"]
    assert [(r, n, kw["token"], kw["split"]) for r, n, kw in pushed] == [("me/skillfactory-sft", 30, secret, "train")]
    assert art.counts["pushed_to"] == "me/skillfactory-sft"
    for path in [*Path(cfg.paths.home).rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

    monkeypatch.setattr(rd, "hub_reachable", lambda timeout=3.0: False)
    offline = make_cfg("stages=[traces]", f"traces.input_dataset={pub}", "traces.token_stats=false",
                       "traces.push_to_hub=me/other")
    with pytest.raises(SkillFactoryError, match="traces.push_to_hub: cannot push to 'me/other': the Hugging Face "
                                                "Hub cannot be reached"):
        run(offline)
    assert len(pushed) == 1


# --- on the reflect artifact (sample -> reflect -> traces) --------------------------------------


def solve(numbers, target):
    """An expression over ``numbers`` equal to ``target`` (small brute force), or None."""
    items = [(Fraction(n), str(n)) for n in numbers]

    def search(pool):
        if len(pool) == 1:
            return pool[0][1] if pool[0][0] == target else None
        for i, j in itertools.permutations(range(len(pool)), 2):
            (a, ea), (b, eb) = pool[i], pool[j]
            rest = [p for k, p in enumerate(pool) if k not in (i, j)]
            options = [(a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (a * b, f"({ea} * {eb})")]
            if b != 0:
                options.append((a / b, f"({ea} / {eb})"))
            for value, expr in options:
                found = search(rest + [(value, expr)])
                if found:
                    return found
        return None

    return search(items)


def scripted(monkeypatch):
    """Samples: even j right, odd j wrong; reflections agree with the grade for even k."""

    def reply(user, j):
        if user.startswith("Check this answer."):
            right = "RIGHT" in user
            agrees = j % 2 == 0
            return f"I checked. <verdict>{'Correct' if right == agrees else 'Incorrect'}</verdict>"
        numbers = [int(x) for x in re.search(r"\[([^\]]*)\]", user).group(1).split(",")]
        target = int(re.findall(r"-?\d+", re.sub(r"\[[^\]]*\]", "", user))[0])
        if j % 2 == 0:
            return f"RIGHT\n<answer>{solve(numbers, target)}</answer>"
        return "WRONG\n<answer>1 + 1</answer>"

    monkeypatch.setattr(ScriptedBackend, "reply", staticmethod(reply))
    register_backend("scripted", ScriptedBackend)


def test_traces_on_this_run_s_reflect_artifact(make_cfg, monkeypatch):
    scripted(monkeypatch)
    cfg = make_cfg("model=tiny", f"model.path={shared_tiny_lm()}", "model.backend=scripted", "sample=tiny",
                   "reflect=tiny", "sample.num_questions=5", "sample.n=2", "reflect.k=3", "stages=[traces]",
                   "traces.formats=[*C_full,*C*IC]", "traces.n_samples=3", "traces.distinct_variants=true")
    assert plan(cfg, STAGES) == ["sample", "reflect", "traces"]
    arts, _ = run(cfg)
    raw = rd.load_artifact(arts["reflect"].path)
    by_id = {f"{r['question_id']}/{r['prompt_variant']}/{r['sample_index']}": r for r in raw}
    assert sum(r[rd.IS_CORRECT][0] for r in raw) == raw.num_rows // 2  # the script: half right
    table = rd.load_artifact(arts["traces"].path)
    counts = arts["traces"].counts
    assert counts["formats"]["*C_full"]["rows"] == 5 * 3 and counts["formats"]["*C*IC"]["rows"] == 5
    assert counts["input"]["keep_rule"] == "reflection_kept flags of the input"
    assert counts["tokens"]["all"]["count"] == table.num_rows
    for row in table:
        sources = [by_id[c] for c in row["completion_ids"]]
        assert len({s["prompt_variant"] for s in sources}) == len(sources)  # distinct variants
        assert {s["question_id"] for s in sources} == {row["question_id"]}
        user, assistant = row["conversations"]
        original = next(r for r in raw if r["question_id"] == row["question_id"] and r["prompt_variant"] == "original")
        assert user["content"] == original["question"]  # the user turn is the `original` prompt
        parsed = parse_trace(assistant["content"])
        assert parsed.samples == [s[rd.COMPLETION] for s in sources]
        for refl, s in zip(parsed.reflections, sources):
            kept = [t for t, k in zip(s[rd.REFLECTIONS], s[rd.REFLECTION_KEPT]) if k]
            assert refl in kept
        if row["format"] == "*C*IC":
            assert not row["sample_correct"][-1]
        else:
            assert row["sample_correct"][-1]
