"""The transformers backend on a random tiny Llama: shapes, seeding, stops, errors."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from skill_factory.errors import SkillFactoryError
from skill_factory.generation import (
    Sampling,
    backend_names,
    chat_messages,
    derive_seed,
    make_backend,
    register_backend,
    render_chat,
    truncate_at_stop,
)
from skill_factory.generation.hf import sample_next, uniform, uniforms
from tiny_lm import shared_tiny_lm


def model_cfg(**kw):
    base = dict(max_length=256, trust_remote_code=False, dtype="float32", generation_batch_size=16,
                backend="hf", tensor_parallel_size=1, chat_template_kwargs={}, gpu_memory_utilization=0.5)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module")
def backend():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model is fastest on one thread, and the machine is shared
    b = make_backend(model_cfg(), str(shared_tiny_lm()))
    yield b
    torch.set_num_threads(threads)


def convs(k):
    return [chat_messages(f"Use [{i}, 7{'0' * (i % 3)}] to make {i + 7}.") for i in range(k)]


def texts(result):
    return [[c.text for c in row] for row in result.completions]


def test_n_samples_per_prompt_and_token_counts(backend):
    result = backend.generate(convs(5), Sampling(n=3, max_new_tokens=12))
    assert len(result.completions) == 5 and all(len(row) == 3 for row in result.completions)
    for row in result.completions:
        for c in row:
            assert 1 <= c.num_tokens <= 12
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert c.num_tokens == 12
    assert result.generated_tokens == sum(c.num_tokens for row in result.completions for c in row)
    assert result.prompt_tokens > 0 and result.seconds > 0


def test_same_seed_same_output_other_seed_other_output(backend):
    s = Sampling(n=2, max_new_tokens=10, top_p=0.95)
    a = backend.generate(convs(4), s, seeds=[1, 2, 3, 4])
    b = backend.generate(convs(4), s, seeds=[1, 2, 3, 4])
    c = backend.generate(convs(4), s, seeds=[5, 6, 7, 8])
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)
    # the n samples of one prompt differ from each other
    assert all(row[0] != row[1] for row in texts(a))
    # without explicit seeds, prompt seeds come from Sampling.seed
    d = backend.generate(convs(4), Sampling(n=2, max_new_tokens=10, top_p=0.95, seed=9))
    e = backend.generate(convs(4), Sampling(n=2, max_new_tokens=10, top_p=0.95, seed=9))
    assert texts(d) == texts(e)


def test_output_does_not_depend_on_batching_or_order(backend):
    s = Sampling(n=3, max_new_tokens=10)
    seeds = [derive_seed("p", i) for i in range(6)]
    whole = texts(backend.generate(convs(6), s, seeds=seeds))
    backend.batch_size = 4
    try:
        reordered = texts(backend.generate(convs(6)[::-1], s, seeds=seeds[::-1]))[::-1]
        alone = texts(backend.generate(convs(6)[2:3], s, seeds=seeds[2:3]))
    finally:
        backend.batch_size = 16
    assert reordered == whole
    assert alone[0] == whole[2]


def test_greedy_samples_are_identical(backend):
    result = backend.generate(convs(2), Sampling(n=3, temperature=0.0, max_new_tokens=8))
    for row in texts(result):
        assert row[0] == row[1] == row[2]


def test_stop_strings_end_the_text_after_the_stop(backend):
    free = texts(backend.generate(convs(3), Sampling(n=2, max_new_tokens=24), seeds=[1, 2, 3]))
    stop = next(ch for ch in "0123456789" if sum(ch in t for row in free for t in row) >= 3)
    stopped = backend.generate(convs(3), Sampling(n=2, max_new_tokens=24, stop=(stop,)), seeds=[1, 2, 3])
    for row_free, row in zip(free, stopped.completions):
        for t, c in zip(row_free, row):
            if stop in t:
                assert c.text == t[: t.index(stop) + 1] and c.finish_reason == "stop"
            else:
                assert c.text == t


def test_prompt_rendered_with_the_chat_template(backend):
    text = render_chat(backend.tokenizer, chat_messages("hi", system="be brief"))
    assert text == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_template_kwargs_reach_the_models_template(tmp_path):
    """model.chat_template_kwargs are template variables: a dated template (as Llama 3.2's)
    writes today's date without date_string, the pinned one with it, in the prompt ids the
    backend generates from."""
    import datetime

    from tiny_lm import DATED_CHAT_TEMPLATE, build_tiny_lm

    path = str(build_tiny_lm(tmp_path / "dated", chat_template=DATED_CHAT_TEMPLATE))
    conv = [chat_messages("Use [1, 2] to make 3.")]
    pinned = make_backend(model_cfg(chat_template_kwargs={"date_string": "26 Jul 2024"}), path)
    prompt = pinned.tokenizer.decode(pinned.encode(conv)[0])
    assert prompt == ("<|im_start|>system\nToday Date: 26 Jul 2024\n\n<|im_end|>\n"
                      "<|im_start|>user\nUse [1, 2] to make 3.<|im_end|>\n<|im_start|>assistant\n")
    result = pinned.generate(conv, Sampling(n=2, max_new_tokens=4))
    assert result.prompt_tokens == 2 * len(pinned.encode(conv)[0])
    today = make_backend(model_cfg(), path)  # a model config without the setting: none passed
    assert today.template_kwargs == {}
    assert f"Today Date: {datetime.datetime.now().strftime('%d %b %Y')}\n" in \
        today.tokenizer.decode(today.encode(conv)[0])


def test_prompt_longer_than_max_length_is_a_user_error(backend):
    with pytest.raises(SkillFactoryError, match="model.max_length"):
        backend.generate([chat_messages("7 " * 300)], Sampling(max_new_tokens=8))


def test_load_errors_name_the_model_path(tmp_path):
    with pytest.raises(SkillFactoryError, match="model.path: cannot load a tokenizer"):
        make_backend(model_cfg(), str(tmp_path / "nothing"))
    from tiny_lm import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "no_template")
    with pytest.raises(SkillFactoryError, match="no chat template"):
        make_backend(model_cfg(), str(tmp_path / "no_template"))


def test_registry_unknown_and_custom_backends():
    assert set(backend_names()) >= {"hf", "vllm"}
    with pytest.raises(SkillFactoryError, match="unknown generation backend 'nope'"):
        make_backend(model_cfg(backend="nope"), "x")
    made = []
    register_backend("recorder", lambda path, cfg: made.append(path) or "backend")
    assert make_backend(model_cfg(backend="recorder"), "p") == "backend" and made == ["p"]


def test_sampling_settings_are_checked_and_stops_truncate():
    with pytest.raises(ValueError):
        Sampling(n=0)
    with pytest.raises(ValueError):
        Sampling(top_p=0.0)
    assert Sampling(stop=("", "</a>")).stop == ("</a>",)
    assert truncate_at_stop("x </a> y </b>", ["</b>", "</a>"]) == ("x </a>", True)
    assert truncate_at_stop("abc", ["z"]) == ("abc", False)
    assert derive_seed(1, "a") == derive_seed(1, "a") != derive_seed(1, "b")
    assert 0 <= derive_seed("x") < 2**63


def test_seeded_sampling_follows_softmax_and_top_p():
    """Inverse-CDF sampling from (seed, step) uniforms reproduces the distribution."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]]))
    draws = 4000
    u = torch.from_numpy(uniforms(list(range(draws)), 4))[:, 2]
    picks = sample_next(logits.repeat(draws, 1), u, temperature=1.0, top_p=1.0)
    freq = torch.bincount(picks, minlength=5).float() / draws
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]), atol=0.03)
    # top_p=0.75 keeps the tokens whose predecessors hold < 0.75 of the mass: 0.5 and 0.3
    picks = sample_next(logits.repeat(draws, 1), u, temperature=1.0, top_p=0.75)
    assert set(picks.tolist()) == {0, 1}
    assert abs((picks == 0).float().mean().item() - 0.5 / 0.8) < 0.03
    # a low temperature sharpens towards the mode; 0 is greedy
    assert (sample_next(logits.repeat(draws, 1), u, temperature=0.1, top_p=1.0) == 0).float().mean() > 0.95
    assert sample_next(logits, u[:1], temperature=0.0, top_p=1.0).tolist() == [0]
    assert uniform(3, 1) == uniform(3, 1) != uniform(3, 2)
    big = [0, 1, 2**63 - 1, derive_seed("x")]
    assert uniforms(big, 5).tolist() == [[uniform(s, t) for t in range(5)] for s in big]


def test_greedy_decoding_matches_transformers_generate(backend):
    """The backend's own decoding loop (left padding, cache pruning) is generate's greedy search."""
    conversations = convs(4)
    ours = backend.generate(conversations, Sampling(temperature=0.0, max_new_tokens=10))
    model, tok = backend.model, backend.tokenizer
    for conv, row in zip(conversations, ours.completions):
        ids = torch.tensor([backend.encode([conv])[0]])
        with torch.inference_mode():
            ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=10, eos_token_id=backend.eos_ids, pad_token_id=backend.pad_id)
        assert row[0].text == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
