"""The bootstrap stage end to end at toy size, and (slow) the quality bar of the default."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from skill_factory.pipeline import MANIFEST, Runner
from skill_factory.config.validate import validate
import skill_factory.stages  # noqa: F401 - registers the stages

FAST = ("debug=fast", "stages=[bootstrap]")


def build(cfg):
    runner = Runner(cfg, Path(cfg.paths.artifacts))
    return runner.run()["bootstrap"], runner


@pytest.fixture(scope="module")
def fast_build(tmp_path_factory):
    """One toy-size bootstrap shared by the tests of this module."""
    import os

    from conftest import compose_cfg
    from skill_factory.config.load import to_typed

    home = tmp_path_factory.mktemp("home")
    os.environ["SKILLFACTORY_HOME"] = str(home)
    try:
        cfg = to_typed(compose_cfg(FAST), run_dir=home / "run")
    finally:
        del os.environ["SKILLFACTORY_HOME"]
    validate(cfg)
    art, runner = build(cfg)
    return cfg, art, runner


def test_bootstrap_writes_a_loadable_model_and_manifest(fast_build):
    cfg, art, runner = fast_build
    assert runner.record.entries["bootstrap"]["status"] == "produced"
    manifest = json.loads((art.path / MANIFEST).read_text())
    counts = manifest["counts"]
    assert counts["parameters"] > 100_000 and counts["steps"] == 100
    assert set(counts["quality"]) == {"n3", "n4", "verdict_accuracy", "verdict_rate"}
    assert set(counts["quality_bar"]) >= {"n3.sampled_accuracy", "verdict_accuracy", "n4_below_n3"}
    model_dir = art.path / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.model_type == "llama"
    assert model.config.hidden_size // model.config.num_attention_heads >= 32
    prompt = tok.apply_chat_template([{"role": "user", "content": "Use [3, 4, 5] to make 35."}],
                                     tokenize=False, add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_save_reload_rescore_gives_identical_logits(fast_build, tmp_path):
    _, art, _ = fast_build
    model = AutoModelForCausalLM.from_pretrained(art.path / "model")
    tok = AutoTokenizer.from_pretrained(art.path / "model")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\nUse [1, 2, 3] to make 6.<|im_end|>\n<|im_start|>assistant\n<answer>1 + 2 + 3</answer>"
    a = tok(text, return_tensors="pt", add_special_tokens=False)
    b = tok2(text, return_tensors="pt", add_special_tokens=False)
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**a).logits, again(**b).logits)


def test_rerun_reuses_the_model(fast_build):
    cfg, art, _ = fast_build
    again, runner = build(cfg)
    assert runner.record.entries["bootstrap"]["status"] == "cached"
    assert again.path == art.path


def test_bootstrap_config_errors_are_listed(make_cfg):
    cfg = make_cfg("stages=[bootstrap]", "model.bootstrap.num_heads=8", "model.bootstrap.verdict_noise=1.5",
                   "model.bootstrap.rare_number_min_count=-1")
    with pytest.raises(Exception) as info:
        validate(cfg)
    keys = [p.key for p in info.value.problems]
    assert keys == ["model.bootstrap.num_heads", "model.bootstrap.verdict_noise",
                    "model.bootstrap.rare_number_min_count"]


@pytest.mark.slow
def test_default_recipe_meets_the_quality_bar(make_cfg):
    cfg = make_cfg("stages=[bootstrap]")
    art, _ = build(cfg)
    bar = art.counts["quality_bar"]
    assert all(v["ok"] for v in bar.values()), bar
    assert art.counts["build_seconds"] <= 300


def test_trace_phrases_are_words_to_the_tokenizer(fast_build):
    cfg, art, _ = fast_build
    tok = AutoTokenizer.from_pretrained(art.path / "model")
    for pool in ("generic", "after_correct", "after_incorrect", "ending", "backtrack", "confirm"):
        for phrase in getattr(cfg.phrases, pool):
            n = len(tok.encode(phrase, add_special_tokens=False))
            # one token per word or punctuation mark (characters would be about five per word)
            assert n <= len(re.findall(r"[A-Za-z]+|[^\sA-Za-z]", phrase)), (phrase, tok.tokenize(phrase))
