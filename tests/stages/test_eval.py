"""The eval stage: suite, decodings, skill usage, budget forcing, report, cache and resume,
which model is evaluated, validation; scripted at the backend boundary and for real on CPU."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tiny_lm import shared_tiny_lm

import skill_factory.stages  # noqa: F401 - registers the stages
from skill_factory.config.validate import validate
from skill_factory.errors import ConfigError, SkillFactoryError
from skill_factory.generation import Completion, GenerationResult, register_backend, truncate_at_stop
from skill_factory.pipeline import MANIFEST, REGISTRY, Artifact, Runner
from skill_factory.stages import eval as eval_stage

STAGES = {"eval": REGISTRY["eval"]}
SMALL = ("eval=tiny", "eval.tasks.countdown_3.size=4", "eval.tasks.countdown_4.size=4",
         "eval.tasks.countdown_5.size=3", "eval.max_new_tokens=400", "eval.temperature=1.0", "eval.n=2",
         "eval.budget_forcing.budgets=[0,64,1000]")


class CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class SkillfulBackend:
    """Answers like a SkillFactory model: a wrong attempt judged Incorrect, a right one judged
    Correct, then the final answer; after "Wait" it confirms; a forced answer is the right one.
    One character is one token."""

    name = "scripted-eval"
    solutions: dict = {}
    calls: list = []

    def __init__(self, model_path, model_cfg):
        self.tokenizer = CharTokenizer()

    @classmethod
    def reply(cls, user, prefix):
        sol = cls.solutions[user]
        if prefix.endswith("<answer>\n"):
            return f"{sol}\n</answer>"
        if prefix.endswith("Wait"):
            return f" let me confirm {sol} once more.\n</think>\n\n<answer>\n{sol}\n</answer>"
        return ("<think>\n<sample>\nTry adding all.\n<answer>1 + 1</answer>\n</sample>\n<reflect>\n"
                "That misses the target.\n<verdict>Incorrect</verdict>\n</reflect>\nAnother way.\n<sample>\n"
                f"<answer>{sol}</answer>\n</sample>\n<reflect>\nIt works.\n<verdict>Correct</verdict>\n</reflect>\n"
                f"</think>\n\nSo the answer is:\n\n<answer>\n{sol}\n</answer>")

    def generate(self, conversations, sampling, *, seeds=None, on_progress=None, prefixes=None):
        prefixes = prefixes or [""] * len(conversations)
        type(self).calls.append(len(conversations))
        out = []
        for conv, prefix in zip(conversations, prefixes):
            text, _ = truncate_at_stop(self.reply(conv[-1]["content"], prefix), sampling.stop)
            if len(text) > sampling.max_new_tokens:
                c = Completion(text[:sampling.max_new_tokens], sampling.max_new_tokens, "length")
            else:
                c = Completion(text, len(text) + 1, "stop")
            out.append([c] * sampling.n)
        if on_progress is not None:
            on_progress(len(out) * sampling.n, sum(c.num_tokens for r in out for c in r))
        return GenerationResult(out)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


register_backend("scripted-eval", SkillfulBackend)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def scripted(make_cfg, tmp_path):
    """Config for the scripted backend on a model "path", with its solutions table filled."""
    from skill_factory.evaluation.suite import build_suite

    model_dir = tmp_path / "some-model"
    model_dir.mkdir()

    def make(*overrides):
        cfg = make_cfg("model=tiny", "model.backend=scripted-eval", f"eval.model={model_dir}", "stages=[eval]",
                       *SMALL, *overrides)
        entries, _ = build_suite(cfg)
        SkillfulBackend.solutions = {x.prompt(q): q.meta["solution"] for x in entries for q in x.questions}
        SkillfulBackend.calls = []
        return cfg

    return make


def run(cfg):
    runner = Runner(cfg, Path(cfg.paths.artifacts), registry=STAGES)
    return runner.run()["eval"], runner


def png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_stage_end_to_end_with_a_skillful_scripted_model(scripted, caplog):
    cfg = scripted()  # (validate knows only the real backends; it is tested below)
    with caplog.at_level(logging.INFO):
        art, runner = run(cfg)
    assert runner.record.entries["eval"]["status"] == "produced"
    out = art.path
    assert sorted(p.name for p in (out / "responses").glob("*.jsonl")) == sorted(
        f"countdown_{k}.{d}.jsonl" for k in (3, 4, 5) for d in ("greedy", "sampled"))
    assert len(list((out / "budget").glob("*.jsonl"))) == 9
    results = json.loads((out / "results.json").read_text())
    for t in results["tasks"].values():
        g, s = t["decodings"]["greedy"], t["decodings"]["sampled"]
        assert (g["n"], s["n"]) == (1, 2)
        assert g["accuracy"] == s["accuracy"] == 1.0 and g["format_rate"] == 1.0
        assert s["pass_at_k"] == {"1": 1.0, "2": 1.0}
        sk = g["skills"]
        assert sk["samples_per_response"] == 2.0 and sk["reflections_per_response"] == 2.0
        assert sk["verdict_accuracy"] == 1.0 and sk["retry_after_incorrect"] == 1.0
        assert sk["stop_after_correct"] == 1.0 and sk["inner_accuracy"] == 0.5 and sk["final_accuracy"] == 1.0
    assert results["tasks"]["countdown_4"]["params"]["num_numbers"] == 4
    points = {p["budget"]: p for p in results["budget_forcing"]["entries"]["countdown_3"]["points"]}
    assert points[0]["forced_rate"] == 1.0 and points[0]["mean_rounds"] == 0 and points[0]["accuracy"] == 1.0
    assert points[64]["forced_rate"] == 1.0 and points[64]["mean_thinking_tokens"] == 64
    assert points[1000]["mean_rounds"] == 2 and points[1000]["forced_rate"] == 0.0
    assert [p["budget"] for p in results["budget_forcing"]["pooled"]] == [0, 64, 1000]
    assert results["run"]["model"] == cfg.eval.model and results["run"]["suite"] == "tiny"
    # one record per response, with the text and its grade
    rec = json.loads((out / "budget" / "countdown_3.B1000.jsonl").read_text().splitlines()[0])
    assert rec["text"].count("Wait") == 2 and rec["cuts"] == ["</think>", "</think>"] and rec["correct"]
    # the report, in the artifact and in the run directory
    run_dir = Path(cfg.paths.run_dir)
    for where in (out, run_dir):
        assert (where / "results.json").is_file() and "| countdown_3 | greedy | 1 | 100.0 ± 0.0" in \
            (where / "results.md").read_text()
        for name in ("accuracy_vs_numbers", "accuracy_vs_budget", "skill_usage"):
            assert png_ok(where / "plots" / f"{name}.png")
    assert "eval results:" in caplog.text and "| countdown_5 | sampled | 2 |" in caplog.text
    counts = json.loads((out / MANIFEST).read_text())["counts"]
    assert counts["responses"] == (4 + 4 + 3) * 3 and counts["budget_responses"] == (4 + 4 + 3) * 3
    assert counts["metrics"]["countdown_3/greedy/accuracy"] == 1.0
    # a rerun is served from the cache
    SkillfulBackend.calls = []
    _, runner = run(cfg)
    assert runner.record.entries["eval"]["status"] == "cached" and SkillfulBackend.calls == []


def test_a_killed_evaluation_resumes_at_the_missing_unit(scripted):
    cfg = scripted("eval.budget_forcing.budgets=[]", "eval.temperature=0", "eval.n=1")
    art, _ = run(cfg)
    before = json.loads((art.path / "results.json").read_text())
    (art.path / MANIFEST).unlink()
    (art.path / "responses" / "countdown_4.greedy.jsonl").unlink()
    SkillfulBackend.calls = []
    again, runner = run(cfg)
    assert runner.record.entries["eval"]["status"] == "resumed"
    assert SkillfulBackend.calls == [4]  # only countdown_4's four questions
    after = json.loads((again.path / "results.json").read_text())
    assert after["tasks"] == before["tasks"]


def test_which_model_is_evaluated(make_cfg, tmp_path):
    cfg = make_cfg("model=tiny")
    for kind, upstream in (("rl", ("rl",)), ("sft", ("sft",)), ("base", ("bootstrap",)), ("/x/model", ()),
                           ("Qwen/Qwen2.5-1.5B-Instruct", ())):
        cfg.eval.model = kind
        assert eval_stage.eval_upstream(cfg) == upstream
    cfg.model.path = "org/base-model"
    cfg.eval.model = "base"
    assert eval_stage.eval_upstream(cfg) == () and eval_stage.eval_model_path(cfg, {}) == "org/base-model"
    cfg.eval.model = "org/other"
    assert eval_stage.eval_model_path(cfg, {}) == "org/other"
    # checkpoints of this run's training stages, from their manifests
    (tmp_path / "sft" / "model").mkdir(parents=True)
    sft = Artifact("sft", tmp_path / "sft", "f" * 16, {"counts": {"checkpoint_dir": "model"}})
    cfg.eval.model = "sft"
    assert eval_stage.eval_model_path(cfg, {"sft": sft}) == str(tmp_path / "sft" / "model")
    (tmp_path / "rl" / "final").mkdir(parents=True)
    rl = Artifact("rl", tmp_path / "rl", "e" * 16, {"counts": {"checkpoint_dir": "final"}})
    cfg.eval.model = "rl"
    assert eval_stage.eval_model_path(cfg, {"rl": rl}) == str(tmp_path / "rl" / "final")
    # the generic reader (a training stage of a plugin) also takes an absolute checkpoint path
    other = Artifact("mine", tmp_path / "mine", "d" * 16, {"counts": {"checkpoint": str(tmp_path / "rl" / "final")}})
    assert eval_stage.checkpoint_from_manifest(other) == str(tmp_path / "rl" / "final")
    for counts, match in (({"dry_run": True}, "dry run"), ({}, "names no checkpoint"),
                          ({"checkpoint_dir": "gone"}, "missing")):
        with pytest.raises(SkillFactoryError, match=match):
            eval_stage.checkpoint_from_manifest(Artifact("rl", tmp_path / "rl", "e" * 16, {"counts": counts}))


def test_validation_lists_eval_problems(make_cfg, tmp_path):
    cfg = make_cfg("model=tiny", f"eval.model={tmp_path}", "stages=[eval]", "eval=tiny",
                   "eval.tasks.countdown_3.task=nope", "+eval.tasks.countdown_4.params.num_numbers_x=1",
                   "eval.tasks.countdown_5.size=0", "eval.prompt_variant=missing",
                   "eval.budget_forcing.tasks=[countdown,longmult]", "eval.budget_forcing.budgets=[8,8,4000]",
                   "eval.budget_forcing.decoding=sampled", "eval.pass_k=[0,1]", "eval.budget_forcing.max_rounds=-1")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    keys = {p.key for p in info.value.problems}
    assert keys >= {"eval.pass_k[0]", "eval.budget_forcing.max_rounds", "eval.budget_forcing.decoding",
                    "eval.budget_forcing.budgets"}
    cfg = make_cfg("model=tiny", f"eval.model={tmp_path}", "stages=[eval]", "eval=tiny",
                   "eval.tasks.countdown_3.task=nope", "+eval.tasks.countdown_4.params.num_numbers_x=1",
                   "eval.tasks.countdown_5.size=0", "eval.prompt_variant=missing",
                   "eval.budget_forcing.tasks=[countdown,longmult]", "eval.budget_forcing.budgets=[8,4000]",
                   "eval.max_new_tokens=2000")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    keys = [p.key for p in info.value.problems]
    assert keys == ["eval.prompt_variant", "eval.tasks.countdown_3.task", "eval.tasks.countdown_4.params",
                    "eval.tasks.countdown_5.size", "eval.budget_forcing.tasks[1]", "eval.budget_forcing.budgets",
                    "eval.max_new_tokens"]
    with pytest.raises(ConfigError, match="neither base/sft/rl nor an existing directory"):
        validate(make_cfg("model=tiny", "eval.model=/no/such/model", "stages=[eval]", "eval=tiny"))
    validate(make_cfg("model=tiny", f"eval.model={tmp_path}", "stages=[eval]", "eval=tiny"))


def test_suites_compose_and_loaded_tasks_need_data(make_cfg, tmp_path, caplog):
    from skill_factory.evaluation.suite import build_suite

    for suite in ("countdown", "ood", "paper", "tiny"):
        validate(make_cfg("model=tiny", f"eval={suite}", f"eval.model={tmp_path}", "stages=[eval]",
                          "model.max_length=8192"))
    with caplog.at_level(logging.WARNING):
        entries, skipped = build_suite(make_cfg("eval=ood"), load_questions=False)
    assert set(skipped) == {"gsm8k", "csqa"} and "eval: skipping gsm8k" in caplog.text
    assert [e.key for e in entries][:4] == ["longmult_2", "longmult_3", "longmult_4", "longmult_5"]
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i} + {i}\n#### {2 * i}"})
                            + "\n" for i in range(5)))
    cfg = make_cfg("eval=ood", f"eval.tasks.gsm8k.params.path={data}", "eval.tasks.gsm8k.size=3")
    entries, skipped = build_suite(cfg, load_questions=False)
    assert set(skipped) == {"csqa"}
    [gsm] = [e for e in entries if e.key == "gsm8k"]
    qs = gsm.task.questions("test", gsm.size, seed=0)
    assert [q.gold for q in qs] == ["0", "2", "4"]
    assert "What is 1 + 1?" in gsm.prompt(qs[1])


def test_training_task_entries_keep_targets_held_out_and_the_trained_prompt(make_cfg):
    from skill_factory.evaluation.suite import build_suite
    from skill_factory.tasks.base import split_of

    cfg = make_cfg("model=tiny", "eval=tiny", "task.countdown.partition_seed=5", "eval.tasks.countdown_5.size=30")
    entries, _ = build_suite(cfg)
    five = entries[2]
    assert five.params["num_numbers"] == 5 and five.params["partition_seed"] == 5
    assert all(split_of(str(q.meta["target"]), 5, 0.1, 0.1) == "test" for q in five.questions)
    assert five.prompt(five.questions[0]) == cfg.prompts.variants["original"].format(**five.questions[0].fields)
    # the same questions whatever the run seed
    again, _ = build_suite(make_cfg("model=tiny", "eval=tiny", "task.countdown.partition_seed=5",
                                    "eval.tasks.countdown_5.size=30", "seed=3"))
    assert [q.id for q in again[2].questions] == [q.id for q in five.questions]


def test_stage_for_real_on_the_hf_backend(make_cfg):
    path = str(shared_tiny_lm())
    cfg = make_cfg("model=tiny", f"eval.model={path}", "stages=[eval]", "eval=tiny",
                   "eval.tasks.countdown_3.size=3", "eval.tasks.countdown_4.size=2", "eval.tasks.countdown_5.size=2",
                   "eval.max_new_tokens=12", "eval.budget_forcing.budgets=[0,6]",
                   "eval.budget_forcing.answer_max_new_tokens=4")
    validate(cfg)
    art, _ = run(cfg)
    results = json.loads((art.path / "results.json").read_text())
    assert set(results["tasks"]) == {"countdown_3", "countdown_4", "countdown_5"}
    assert results["tasks"]["countdown_3"]["decodings"]["greedy"]["questions"] == 3
    for p in results["budget_forcing"]["entries"]["countdown_4"]["points"]:
        assert p["forced_rate"] == 1.0  # a random model never closes: the budget always runs out
        assert p["mean_thinking_tokens"] <= p["budget"] + 1


def test_cached_results_republish_into_a_new_run_dir_and_reach_wandb(scripted, tmp_path, monkeypatch):
    import sys
    import types

    cfg = scripted("eval.budget_forcing.budgets=[]", "eval.temperature=0", "eval.n=1")
    art, _ = run(cfg)
    logged = []
    fake = types.SimpleNamespace(run=types.SimpleNamespace(log=logged.append), Image=lambda p: ("image", p),
                                 Table=lambda columns, data: ("table", columns, data))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    eval_stage.publish_artifact(art, tmp_path / "another-run")
    assert (tmp_path / "another-run" / "results.md").is_file()
    assert png_ok(tmp_path / "another-run" / "plots" / "skill_usage.png")
    [payload] = logged
    assert payload["eval/plots/accuracy_vs_numbers"] == ("image", str(tmp_path / "another-run" / "plots" /
                                                                     "accuracy_vs_numbers.png"))
    kind, columns, rows = payload["eval/table"]
    assert columns[:4] == ["task", "decoding", "n", "accuracy"] and rows[0][:4] == ["countdown_3", "greedy", 1, 1.0]
