"""The tiny model's tokenizer: compact numbers and tags, exact round trips, ChatML that
LLaMA-Factory's qwen template reproduces."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from conftest import compose_cfg
from skill_factory.config.load import to_typed
from skill_factory.tinylm.tokenizer import SPECIAL_TOKENS, TASK_TAGS, build_tokenizer

TRACE = (
    "<think>\n<sample>\n<answer>(15 + 86) - 25</answer>\n</sample>\n<reflect>\n"
    "15 + 86 = 101, 101 - 25 = 76, target 76 <verdict>Correct</verdict>\n</reflect>\n</think>\n\n"
    "<answer>\n(15 + 86) - 25\n</answer>"
)


@pytest.fixture(scope="module")
def prompts():
    return to_typed(compose_cfg()).prompts


@pytest.fixture(scope="module")
def tok(prompts):
    texts = list(prompts.variants.values()) + [prompts.reflection, TRACE] * 20
    return build_tokenizer(texts)


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_whole_numbers_and_operators_are_single_tokens(tok):
    assert all(len(ids(tok, str(n))) == 1 for n in range(1000))
    assert [tok.decode([i]) for i in ids(tok, "12345")] == ["123", "45"]
    for op in (" + ", " - ", " * ", " / ", " = "):
        assert len(ids(tok, op)) == 1, op
    assert len(ids(tok, "(37 - 26) * 34")) == 7


def test_tags_are_ordinary_added_tokens_that_survive_decoding(tok):
    for tag in TASK_TAGS:
        (i,) = ids(tok, tag)
        assert tok.decode([i], skip_special_tokens=True) == tag
    text = "<answer>3</answer><|im_end|>"
    assert tok.decode(ids(tok, text), skip_special_tokens=True) == "<answer>3</answer>"
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


@pytest.mark.parametrize("text", [
    TRACE,
    "Step 1: 3 * 4 = 12\nStep 2: 12 / 2 = 6",
    "  spaces\tand\n\nnewlines  kept ",
    "unicode: héllo ✓ 数字 ٣",
    "007 and 1000000",
])
def test_round_trip_is_exact(tok, text):
    assert tok.decode(ids(tok, text)) == text


def test_prompts_encode_compactly(tok, prompts):
    for template in prompts.variants.values():
        text = template.format(numbers="[25, 15, 86]", target="76")
        assert len(ids(tok, text)) <= 2 * len(text.split()) + 8, text
    reflection_words = prompts.reflection.replace("{question}", "").replace("{response}", "").split()
    assert len(ids(tok, " ".join(reflection_words))) <= len(reflection_words) + 2


def test_saved_tokenizer_reloads_as_itself(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert "Qwen" not in type(again).__name__  # a Qwen2 class would drop spaces and newlines
    assert ids(again, TRACE) == ids(tok, TRACE)
    assert again.decode(ids(again, TRACE)) == TRACE


def test_chat_template_matches_llamafactory_qwen_template(tok):
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    template = get_template_and_fix_tokenizer(tok, DataArguments(template="qwen", default_system=""))
    messages = [{"role": "user", "content": "Use [1, 2] to make 3."},
                {"role": "assistant", "content": TRACE}]
    prompt_ids, answer_ids = template.encode_oneturn(tok, messages)
    ours = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt_ids == ids(tok, ours)
    assert tok.decode(answer_ids) == TRACE + "<|im_end|>\n"
