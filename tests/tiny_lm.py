"""A random tiny Llama model and a ChatML tokenizer, built locally in about a second.

Why: generation tests need a real transformers model and a real chat template, and
nothing may be downloaded. Outputs of a random model are garbage (grading gives False,
verdict parsing gives None), which is all plumbing tests need.

    path = build_tiny_lm(tmp_path / "tiny")            # a Hugging Face model folder
"""
from __future__ import annotations

from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TAGS = ["<answer>", "</answer>", "<verdict>", "</verdict>"]
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# ChatML that, like Llama 3.2's template, always writes a system block with a date: today's
# (transformers' strftime_now) unless the caller passes the template variable date_string
DATED_CHAT_TEMPLATE = (
    "{%- if not date_string is defined -%}{%- set date_string = strftime_now('%d %b %Y') -%}{%- endif -%}"
    "{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
    "{%- set messages = messages[1:] -%}{%- else -%}{%- set system = '' -%}{%- endif -%}"
    "{{- '<|im_start|>system\\nToday Date: ' + date_string + '\\n\\n' + system + '<|im_end|>\\n' -}}"
    + CHAT_TEMPLATE
)
# OLMo 2 Instruct's Tulu format (no LLaMA-Factory template matches it): the template writes
# bos_token (<|endoftext|>, also the eos) once, then <|system|>/<|user|>/<|assistant|> turns
TULU_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{% if not loop.last %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"
)
CORPUS = [
    "Use [12, 5, 3] to make 51.", "Plan, then make 51 from [12, 5, 3].",
    "Check this answer. (12 + 5) * 3 = 51 Correct Incorrect",
    "Step 1: 12 + 5 = 17 Step 2: 17 * 3 = 51 target numbers each once",
    "system user assistant You are a helpful assistant.",
] + [f"{i} + {i} - {i} * {i} / {i} = ( )" for i in range(100)]


def build_tokenizer(chat_template: str = CHAT_TEMPLATE, eos_token: str = "<|im_end|>",
                    bos_token: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos_token,
                                   pad_token="<|endoftext|>", bos_token=bos_token,
                                   additional_special_tokens=["<|im_start|>"])
    fast.add_tokens(TAGS)
    fast.chat_template = chat_template
    return fast


def build_tiny_lm(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2, **tokenizer_kwargs) -> Path:
    """Write a random Llama model + tokenizer to ``path`` (a few hundred KB); ``tokenizer_kwargs``
    go to ``build_tokenizer`` (another chat template, eos or bos)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = build_tokenizer(**tokenizer_kwargs)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


_BUILT: dict = {}


def shared_tiny_lm() -> Path:
    """One random tiny model per test process (built on first use, in a temp folder)."""
    import atexit
    import shutil
    import tempfile

    if "path" not in _BUILT:
        root = tempfile.mkdtemp(prefix="sf-tiny-lm-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _BUILT["path"] = build_tiny_lm(Path(root) / "model")
    return _BUILT["path"]


class ScriptedBackend:
    """A generation backend that answers from a function instead of a model.

    ``reply(user_text, sample_index) -> str``; registered with
    ``skill_factory.generation.register_backend`` so stages pick it via ``model.backend``.
    Lets stage tests control correctness and verdicts exactly.
    """

    name = "scripted"
    reply = staticmethod(lambda user, j: "")
    calls: list = []

    def __init__(self, model_path, model_cfg):
        self.model_path = model_path

    def generate(self, conversations, sampling, *, seeds=None, on_progress=None):
        from skill_factory.generation import Completion, GenerationResult

        out = []
        for conv in conversations:
            user = conv[-1]["content"]
            row = [Completion(type(self).reply(user, j), 3, "stop") for j in range(sampling.n)]
            out.append(row)
        type(self).calls.append(len(conversations))
        if on_progress is not None:
            on_progress(len(conversations) * sampling.n, 3 * len(conversations) * sampling.n)
        return GenerationResult(out, generated_tokens=3 * len(conversations) * sampling.n, seconds=1e-3)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
