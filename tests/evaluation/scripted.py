"""A deterministic generator stand-in at the backend boundary, for budget-forcing tests.

One character is one token (unless a real tokenizer's counter is given), so budgets, cuts and
truncations can be checked exactly. The "model" is a function ``reply(user, prefix) -> text``
giving what it would write after the assistant prefix; the stand-in applies ``max_new_tokens``
(in tokens) and stop strings like a backend.
"""
from __future__ import annotations

from skill_factory.generation import Completion, GenerationResult, truncate_at_stop


class CharTokens:
    def count(self, text: str) -> int:
        return len(text)

    def truncate(self, text: str, n: int) -> str:
        return text[:max(n, 0)]


class CharTokenizer:
    """Enough of a tokenizer for ``TokenizerTokens``: one id per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class ScriptedGenerator:
    def __init__(self, reply, tokens=None):
        self.reply = reply
        self.tokens = tokens or CharTokens()
        self.calls: list[dict] = []
        self.tokenizer = CharTokenizer()

    def generate(self, conversations, sampling, *, seeds=None, on_progress=None, prefixes=None):
        prefixes = list(prefixes) if prefixes is not None else [""] * len(conversations)
        self.calls.append({"users": [c[-1]["content"] for c in conversations], "prefixes": prefixes,
                           "max_new_tokens": sampling.max_new_tokens, "stop": sampling.stop,
                           "seeds": list(seeds) if seeds is not None else None, "n": sampling.n})
        out = []
        for conv, prefix in zip(conversations, prefixes):
            row = []
            for _ in range(sampling.n):
                text, _ = truncate_at_stop(self.reply(conv[-1]["content"], prefix), sampling.stop)
                count = self.tokens.count(text)
                if count > sampling.max_new_tokens:
                    row.append(Completion(self.tokens.truncate(text, sampling.max_new_tokens),
                                          sampling.max_new_tokens, "length"))
                else:
                    row.append(Completion(text, count + 1, "stop"))
            out.append(row)
        if on_progress is not None:
            on_progress(len(out), sum(c.num_tokens for r in out for c in r))
        return GenerationResult(out)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
