"""Budget forcing: the loop against a scripted generator (exact cuts, rounds, budgets, forced
answers), and for real with tiny models on the transformers backend."""
from __future__ import annotations

import pytest
import torch
from scripted import CharTokens, ScriptedGenerator

from skill_factory.evaluation.budget import (
    ForcingSettings,
    Marker,
    TokenizerTokens,
    budget_force,
    find_cut,
)
from skill_factory.generation import derive_seed

CONV = [{"role": "user", "content": "Q"}]
SETTINGS = ForcingSettings(answer_max_new_tokens=20)


def force(gen, budget, n=1, settings=SETTINGS, seeds=None, convs=None, has_answer=lambda t: "<answer>" in t):
    convs = convs or [CONV] * n
    return budget_force(gen, convs, seeds or list(range(len(convs))), budget=budget, temperature=0.0, top_p=1.0,
                        settings=settings, tokens=CharTokens(), has_answer=has_answer)


def thinker(user, prefix):
    """Closes its thinking at once; after each "Wait" it thinks one more step."""
    if prefix == "":
        return "<think>\nTry A.\n</think>\n\n<answer>A</answer>"
    if prefix.endswith("Wait"):
        step = "BCDEF"[prefix.count("Wait") - 1]
        return f" try {step}.\n</think>\n\n<answer>{step}</answer>"
    return "42</answer> trailing"  # the forced answer


def test_early_close_is_cut_before_think_close_and_continued_for_r_rounds():
    gen = ScriptedGenerator(thinker)
    [out] = force(gen, budget=1000)
    assert out.text == "<think>\nTry A.\n\nWait try B.\n\nWait try C.\n</think>\n\n<answer>C</answer>"
    assert (out.rounds, out.reason, out.forced, out.unclosed) == (2, "natural", False, False)
    assert out.cuts == ["</think>", "</think>"]
    assert out.tokens == out.thinking_tokens == len(out.text)
    # one call per round, each continuing the cut response with the remaining budget
    assert [c["prefixes"] for c in gen.calls] == [[""], ["<think>\nTry A.\n\nWait"],
                                                  ["<think>\nTry A.\n\nWait try B.\n\nWait"]]
    assert [c["max_new_tokens"] for c in gen.calls] == [1000, 1000 - len("<think>\nTry A.\n\nWait"),
                                                         1000 - len("<think>\nTry A.\n\nWait try B.\n\nWait")]
    assert [c["seeds"] for c in gen.calls] == [[derive_seed(0, "budget-round", r)] for r in range(3)]


def test_zero_rounds_keeps_the_models_own_ending():
    gen = ScriptedGenerator(thinker)
    [out] = force(gen, budget=1000, settings=ForcingSettings(max_rounds=0))
    assert out.text == "<think>\nTry A.\n</think>\n\n<answer>A</answer>" and out.rounds == 0 and not out.forced


def test_final_answer_marker_keeps_the_answer_and_ignores_inner_answers():
    def plain(user, prefix):
        if prefix == "":
            return "<sample>\n<answer>1 + 2</answer>\n</sample>\nSo <answer>3</answer><|junk|>"
        return " I am sure.\n<answer>3</answer>"

    gen = ScriptedGenerator(plain)
    [out] = force(gen, budget=500, settings=ForcingSettings(max_rounds=1, continuation=("Hmm",)))
    assert gen.calls[1]["prefixes"] == ["<sample>\n<answer>1 + 2</answer>\n</sample>\nSo <answer>3</answer>\nHmm"]
    assert out.text.endswith("</answer>\nHmm I am sure.\n<answer>3</answer>")
    assert out.cuts == ["</answer>"] and out.rounds == 1


def test_no_marker_cuts_at_the_end_and_phrases_cycle():
    gen = ScriptedGenerator(lambda user, prefix: "ok <answer>1</answer>" if prefix.count("\n") == 2 else "thinking")
    [out] = force(gen, budget=500, settings=ForcingSettings(max_rounds=2, continuation=("Wait", "But")))
    assert gen.calls[1]["prefixes"] == ["thinking\nWait"]
    assert gen.calls[2]["prefixes"] == ["thinking\nWaitthinking\nBut"]
    assert out.cuts == ["", ""] and out.text == "thinking\nWaitthinking\nButok <answer>1</answer>"


def test_model_that_never_closes_spends_the_budget_and_is_forced():
    def rambler(user, prefix):
        return "42" if prefix.endswith("<answer>\n") else "<think>\n" + "blah " * 100

    gen = ScriptedGenerator(rambler)
    [out] = force(gen, budget=30)
    head = ("<think>\n" + "blah " * 100)[:30]
    # the think block is still open: it is closed before the answer is forced
    assert out.text == head + "</think>" + "\n\n<answer>\n" + "42" + "</answer>"
    assert (out.reason, out.forced, out.unclosed, out.rounds) == ("budget", True, True, 0)
    assert out.thinking_tokens == 30
    forced_call = gen.calls[-1]
    assert forced_call["stop"] == ("</answer>",) and forced_call["max_new_tokens"] == 20
    assert forced_call["seeds"] == [derive_seed(0, "budget-force")]


@pytest.mark.parametrize("budget", [0, -5])
def test_budget_zero_or_less_answers_at_once(budget):
    gen = ScriptedGenerator(lambda user, prefix: "7</answer>")
    [out] = force(gen, budget=budget)
    assert len(gen.calls) == 1 and gen.calls[0]["prefixes"] == ["\n\n<answer>\n"]
    assert out.text == "\n\n<answer>\n7</answer>"
    assert (out.reason, out.forced, out.unclosed, out.thinking_tokens) == ("budget", True, False, 0)


def test_no_final_answer_after_the_rounds_is_forced_and_an_empty_answer_grades_as_nothing():
    gen = ScriptedGenerator(lambda user, prefix: "" if prefix.endswith("<answer>\n") else "I give up.")
    [out] = force(gen, budget=100, settings=ForcingSettings(max_rounds=0, answer_max_new_tokens=5))
    assert out.reason == "no_answer" and out.forced and out.unclosed
    assert out.text == "I give up.\n\n<answer>\n</answer>"
    from skill_factory.tasks import build_task

    assert build_task("countdown").grade(out.text, "[1, 2]->3") == ("", False)


def test_continuation_landing_on_the_budget_is_forced():
    gen = ScriptedGenerator(lambda user, prefix: "X</answer>" if prefix.endswith("<answer>\n") else "abcdef <answer>1</answer>")
    # the cut keeps 25 characters; "\nWait" makes 30 = the budget: no room left to think
    [out] = force(gen, budget=30, settings=ForcingSettings(max_rounds=3))
    assert out.rounds == 1 and out.reason == "budget" and out.forced
    assert out.text == "abcdef <answer>1</answer>\nWait\n\n<answer>\nX</answer>"
    assert len(gen.calls) == 2  # round 0, then the forced answer


def test_rows_are_batched_by_remaining_budget():
    def by_user(user, prefix):
        if prefix == "":
            return "x" * (10 if user == "short" else 70) + "<answer>1</answer>"
        return "y<answer>2</answer>"

    gen = ScriptedGenerator(by_user)
    convs = [[{"role": "user", "content": u}] for u in ("short", "long", "short")]
    outs = force(gen, budget=200, convs=convs, settings=ForcingSettings(max_rounds=1, answer_max_new_tokens=20))
    assert [o.rounds for o in outs] == [1, 1, 1]
    round1 = gen.calls[1:]
    # remaining budgets 200-33 and 200-93 differ by more than the slack (20): two calls
    assert sorted(c["max_new_tokens"] for c in round1) == [107, 167]
    assert sorted(len(c["users"]) for c in round1) == [1, 2]
    assert outs[0].text == outs[2].text == "x" * 10 + "<answer>1</answer>\nWaity<answer>2</answer>"


def test_a_row_given_more_room_than_its_budget_is_truncated_to_it():
    def by_user(user, prefix):
        if prefix == "":
            return "x" * (10 if user == "a" else 15) + "<answer>1</answer>"
        return "z" * 500

    gen = ScriptedGenerator(by_user)
    convs = [[{"role": "user", "content": u}] for u in ("a", "b")]
    outs = force(gen, budget=100, convs=convs, settings=ForcingSettings(max_rounds=1, answer_max_new_tokens=20))
    # one call for both rows (remaining 67 and 62) with the larger room; the other row is cut to its own budget
    assert len(gen.calls[1]["users"]) == 2 and gen.calls[1]["max_new_tokens"] == 67
    assert [o.thinking_tokens for o in outs] == [100, 100]
    assert all(o.reason == "budget" for o in outs)


def test_find_cut():
    markers = (Marker("</think>", False), Marker("</answer>", True))
    assert find_cut("a</think>b</think>c<answer>x</answer>", markers) == (10, "</think>")
    assert find_cut("<answer>1</answer> and <answer>2</answer>!", markers) == (41, "</answer>")
    assert find_cut("nothing", markers) == (7, "")


def test_settings_from_config(make_cfg):
    cfg = make_cfg("eval=tiny", "eval.budget_forcing.continuation=[Wait,Hmm]")
    s = ForcingSettings.from_config(cfg.eval.budget_forcing)
    assert s.continuation == ("Wait", "Hmm") and s.markers[0] == Marker("</think>", False)
    assert s.markers[1] == Marker("</answer>", True) and s.answer_max_new_tokens == 48


# --- multi-token markers with a real tokenizer ---------------------------------------------------

def test_multi_token_markers_with_a_real_tokenizer():
    from tiny_lm import build_tokenizer

    tok = build_tokenizer()
    tokens = TokenizerTokens(tok)
    assert tokens.count("</think>") > 1  # several tokens for this tokenizer
    # the budget runs out in the middle of "</think>": the partial marker is no close, so the
    # think block counts as open and is closed before the forced answer
    text = "<think>\nI try 3 + 4.\n</think>\n\n<answer>7</answer>"
    budget = tokens.count("<think>\nI try 3 + 4.\n</th")

    gen = ScriptedGenerator(lambda user, prefix: "7</answer>" if prefix.endswith("<answer>\n") else text,
                            tokens=tokens)
    [out] = budget_force(gen, [CONV], [0], budget=budget, temperature=0.0, top_p=1.0, settings=SETTINGS,
                         tokens=tokens, has_answer=lambda t: "<answer>" in t)
    assert out.reason == "budget"
    assert out.text.startswith("<think>\nI try 3 + 4.\n</th") and "</th</think>\n\n<answer>\n7</answer>" in out.text
    assert out.thinking_tokens <= budget + 1


# --- for real: the transformers backend ------------------------------------------------------------

@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_hf_backend_continues_an_assistant_prefix(make_cfg):
    from tiny_lm import shared_tiny_lm
    from transformers import AutoModelForCausalLM

    from skill_factory.generation import Sampling, make_backend

    path = str(shared_tiny_lm())
    cfg = make_cfg("model=tiny", f"model.path={path}")
    backend = make_backend(cfg.model, path)
    prefix = "Use [12, 5, 3] to make"
    ids = backend.encode([CONV], [prefix])[0]
    plain = backend.encode([CONV])[0]
    assert ids[:len(plain)] == plain and len(ids) > len(plain)
    res = backend.generate([CONV], Sampling(n=1, temperature=0.0, max_new_tokens=6), prefixes=[prefix])
    model = AutoModelForCausalLM.from_pretrained(path)
    ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=6, do_sample=False, pad_token_id=backend.pad_id)
    expected = backend.tokenizer.decode(ref[0, len(ids):], skip_special_tokens=True)
    assert res.completions[0][0].text == expected  # only the new text, continuing the prefix
    with pytest.raises(ValueError):
        backend.encode([CONV], [])


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny Countdown model trained for a few seconds (debug=fast recipe): it writes
    ``<answer>…</answer>`` and ends its turn, so budget forcing has something to cut."""
    from conftest import compose_cfg

    from skill_factory.config.load import to_typed
    from skill_factory.tinylm.build import build_tiny_model

    root = tmp_path_factory.mktemp("trained-tiny")
    cfg = to_typed(compose_cfg(["debug=fast"]), run_dir=root / "run")
    build_tiny_model(cfg.model.bootstrap, cfg.prompts, cfg.model, root / "model", root / "scratch")
    return cfg, str(root / "model")


def test_budget_forcing_for_real_on_the_tiny_model(trained_tiny):
    from skill_factory.evaluation.evaluate import answer_forced
    from skill_factory.evaluation.suite import Decoding, build_suite
    from skill_factory.generation import make_backend

    cfg, path = trained_tiny
    entries, _ = build_suite(cfg, load_questions=False)
    entry = entries[0]
    entry.questions = entry.task.questions("test", 12, seed=0)
    settings = ForcingSettings(max_rounds=2, answer_max_new_tokens=16)
    with make_backend(cfg.model, path) as backend:
        tokens = TokenizerTokens(backend.tokenizer)
        records = {b: answer_forced(backend, entry, Decoding("greedy", 1, 0.0, 1.0), budget=b, settings=settings,
                                    seed=0) for b in (0, 12, 48)}
    for b, recs in records.items():
        for r in recs:
            assert r["thinking_tokens"] <= max(b, 0) + 2  # re-tokenizing the joined text may merge a token
            assert r["rounds"] <= 2
            assert ("\nWait" in r["text"]) == (r["rounds"] > 0)
            if r["forced"]:
                assert r["text"].rstrip().endswith("</answer>")
            assert r["num_tokens"] == tokens.count(r["text"])
    assert all(r["forced"] and r["rounds"] == 0 for r in records[0])
    # with room to think, the model closes its answer early and is made to go on
    assert any(r["rounds"] > 0 and r["cuts"][0] == "</answer>" for r in records[48])
