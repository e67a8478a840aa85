"""The embedded tiny model's tokenizer, built offline with the ``tokenizers`` library.

Why custom: no tokenizer can be downloaded here, and a character-level one makes a tiny
model twice as slow to learn Countdown. This one is byte-level BPE (any text round-trips
exactly, spaces and newlines included) with three deliberate properties:

- every whole number 0-999 is one token (longer digit runs split into chunks of three),
  and `` + ``, `` - ``, `` * ``, `` / ``, `` = `` with their spaces are single tokens, so an
  equation costs a handful of tokens;
- the task tags (``<answer>``, ``<verdict>``, ``<sample>``, ``<reflect>``, ``<think>`` and
  closers) are ordinary added tokens: one token each, kept when decoding with
  ``skip_special_tokens=True``;
- ChatML special tokens and a chat template that renders exactly what LLaMA-Factory's
  ``qwen`` template renders with ``default_system: ""`` (no system prompt unless a
  conversation has one; ``conf/model/tiny.yaml`` says so), so sampling, SFT and RL all see
  the same text, and the tiny model's examples stay short.

The BPE merges for words are learned from the texts the model will meet (its prompt
variants, reflection prompt, phrase pools and generated examples), so those encode as
whole words, not character soup.

    tok = build_tokenizer(texts)          # a transformers PreTrainedTokenizerFast
    tok.save_pretrained(path)
"""
from __future__ import annotations

import json
from typing import Iterable

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TASK_TAGS = tuple(
    f"<{slash}{name}>" for name in ("answer", "verdict", "sample", "reflect", "think")
    for slash in ("", "/")
)
# ChatML: every message (a system message only when given) as <|im_start|>role\n…<|im_end|>\n
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Pieces the byte-level BPE works within: digit chunks of at most three, an operator with
# its surrounding spaces, a word with its leading space, a comma or colon with its
# trailing space, one other punctuation mark with its leading space, or a run of whitespace.
_PIECES = r"\d{1,3}| [+\-*/=] |[+\-*/=]| ?[A-Za-z]+|[,:] | ?[^\sA-Za-z\d]|\s+"


def _fixed_merges() -> list[tuple[str, str]]:
    """Merges that make every number 10-999 and every spaced operator a single token.

    In byte-level symbols a space is "\u0120"; ASCII digits and operators are themselves.
    """
    merges = [(str(n)[0], str(n)[1]) for n in range(10, 100)]
    # a 3-digit number may first merge either pair (BPE applies the lowest-ranked pair),
    # so both completions are needed: 321 -> 3|21 -> 321 and 123 -> 12|3 -> 123
    merges += [(str(n)[:2], str(n)[2]) for n in range(100, 1000)]
    merges += [(str(n)[0], str(n)[1:]) for n in range(100, 1000) if str(n)[1] != "0"]
    space = "\u0120"
    for op in "+-*/=":
        merges += [(space, op), (space + op, space)]
    return merges


def build_tokenizer(texts: Iterable[str], vocab_size: int = 3000):
    """Train the word merges on ``texts`` and assemble the full tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    fixed = _fixed_merges()

    # 1. learn word merges on the texts without digits and operators (they get the fixed
    #    merges above; digits and operators only occur in pieces of their own)
    word_tok = Tokenizer(models.BPE())
    word_tok.pre_tokenizer = pre
    n_reserved = 256 + len(fixed) + len(SPECIAL_TOKENS) + len(TASK_TAGS)
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - n_reserved, 256) + 256,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # each replaced by a line break, so a word after one ("re-derive") is learned as it is
    # met when encoding: a piece without a leading space
    table = str.maketrans("0123456789+-*/=", "\n" * 15)
    word_tok.train_from_iterator((t.translate(table) for t in texts), trainer=trainer)
    vocab = dict(word_tok.get_vocab())
    merges = [tuple(m) for m in json.loads(word_tok.to_str())["model"]["merges"]]

    # 2. add the fixed merges and the tokens they produce
    for a, b in fixed:
        vocab.setdefault(a + b, len(vocab))
    merges += fixed

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TASK_TAGS])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 20,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
