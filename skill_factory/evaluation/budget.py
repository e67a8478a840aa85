"""Budget forcing, s1-style and template-agnostic: make a response think longer, or stop it.

    settings = ForcingSettings.from_config(cfg.eval.budget_forcing)
    out = budget_force(backend, conversations, seeds, budget=256, temperature=0.0, top_p=1.0,
                       settings=settings, tokens=TokenizerTokens(backend.tokenizer),
                       has_answer=lambda text: task.extract(text) is not None)
    out[0].text, out[0].tokens, out[0].rounds, out[0].forced

The loop, per response (all responses of a call advance together, one batched ``generate``
per round):

1. Generate up to the remaining budget ``B - tokens(response so far)``.
2. If the budget runs out mid-response, the answer is **forced** (step 4).
3. If the model ends its turn first and fewer than ``R`` continuations were made, the response
   is **cut** where it closed its reasoning and a continuation phrase is appended ("Wait"),
   then generation continues from there (step 1). The cut point is the last occurrence of the
   first configured marker present in the response: by default ``</think>`` (removed: the model
   takes its conclusion back) or else the final ``</answer>`` (kept: the answer stays, the model
   goes on after it); with no marker at all, the end of the response. Markers are matched in
   the decoded text, never as token ids, so a marker spanning several tokens (``</think>`` is
   four tokens for most tokenizers) is found however it was tokenized. Only the last occurrence
   counts: a SkillFactory trace holds many inner ``</answer>`` tags, and only the final one
   closes the reasoning. After ``R`` continuations, the model's own ending is kept.
4. Forcing: ``think_close`` if a ``think_open`` is still open, then ``force_answer`` (default
   ``\\n\\n<answer>\\n``), then up to ``answer_max_new_tokens`` tokens until ``answer_close``; if
   the model does not close the answer, the tag is closed for it (counted as ``unclosed``).
   A response that ends without any extractable final answer is forced the same way.

Edge cases: a budget <= 0 forces the answer at once (no thinking at all); a model that never
closes spends the budget and is forced; a continuation that lands exactly on the budget is
forced; a forced answer the model leaves empty grades as wrong.

Token accounting: ``tokens(text)`` is the length of the text re-tokenized by the model's
tokenizer (``TokenizerTokens``): what the response *is*, not what was sampled and thrown
away after a cut. Continuation phrases count toward the budget (they are thinking text).

Why a stand-in-friendly shape: the loop only needs ``backend.generate(conversations,
sampling, seeds=..., prefixes=...)`` and a token counter, so the tests drive it with a
scripted generator whose every cut and round is known.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from skill_factory.generation.base import Sampling, derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Marker:
    text: str
    # True: the cut keeps the marker; False: the cut removes it
    keep: bool = False


@dataclass(frozen=True)
class ForcingSettings:
    markers: tuple[Marker, ...] = (Marker("</think>", False), Marker("</answer>", True))
    continuation: tuple[str, ...] = ("Wait",)
    separator: str = "\n"
    max_rounds: int = 2
    think_open: str = "<think>"
    think_close: str = "</think>"
    force_answer: str = "\n\n<answer>\n"
    answer_close: str = "</answer>"
    answer_max_new_tokens: int = 64

    @classmethod
    def from_config(cls, bf: Any) -> "ForcingSettings":
        """From an ``eval.budget_forcing`` config section."""
        return cls(markers=tuple(Marker(m.text, bool(m.keep)) for m in bf.markers),
                   continuation=tuple(bf.continuation), separator=bf.separator,
                   max_rounds=int(bf.max_rounds), think_open=bf.think_open, think_close=bf.think_close,
                   force_answer=bf.force_answer, answer_close=bf.answer_close,
                   answer_max_new_tokens=int(bf.answer_max_new_tokens))


class Tokens(Protocol):
    def count(self, text: str) -> int: ...

    def truncate(self, text: str, n: int) -> str: ...


class TokenizerTokens:
    """Token counting and truncation with a Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def count(self, text: str) -> int:
        return len(self._ids(text))

    def truncate(self, text: str, n: int) -> str:
        ids = self._ids(text)
        if len(ids) <= n:
            return text
        return self.tokenizer.decode(ids[:max(n, 0)], skip_special_tokens=True)


@dataclass
class Forced:
    """One budget-forced response."""

    text: str
    # tokens of the final response, and of its part before a forced answer
    tokens: int
    thinking_tokens: int
    # continuations appended
    rounds: int
    # why the response ended: natural (the model's own ending, after R rounds), budget (the
    # budget ran out; answer forced), no_answer (ended without a final answer; answer forced)
    reason: str
    forced: bool
    # the forced answer was not closed by the model (the tag was added)
    unclosed: bool = False
    # the marker each cut was made at ("" = the end of the response: no marker present)
    cuts: list[str] = field(default_factory=list)


def find_cut(text: str, markers: Sequence[Marker]) -> tuple[int, str]:
    """Where a finished response closed its reasoning: (cut position, marker text or "")."""
    for m in markers:
        if not m.text:
            continue
        i = text.rfind(m.text)
        if i >= 0:
            return (i + len(m.text) if m.keep else i), m.text
    return len(text), ""


def think_is_open(text: str, settings: ForcingSettings) -> bool:
    if not settings.think_open or not settings.think_close:
        return False
    return text.count(settings.think_open) > text.count(settings.think_close)


def _buckets(remaining: dict[int, int], slack: int) -> list[list[int]]:
    """Rows grouped so that within a group the largest remaining budget exceeds the smallest
    by at most ``slack``: one ``generate`` per group, and no row is given (much) more room
    than its budget, so prompt + response never outgrows the model's context."""
    order = sorted(remaining, key=lambda i: -remaining[i])
    groups: list[list[int]] = []
    top = None
    for i in order:
        if top is None or top - remaining[i] > slack:
            groups.append([])
            top = remaining[i]
        groups[-1].append(i)
    return groups


def budget_force(backend: Any, conversations: Sequence[Any], seeds: Sequence[int], *, budget: int,
                 temperature: float, top_p: float, settings: ForcingSettings, tokens: Tokens,
                 has_answer: Callable[[str], bool],
                 on_progress: Optional[Callable[[int, int], None]] = None) -> list[Forced]:
    """Budget-force one response per conversation (``seeds[i]`` seeds conversation ``i``)."""
    n = len(conversations)
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} conversations")
    prefix = [""] * n
    rounds = [0] * n
    cuts: list[list[str]] = [[] for _ in range(n)]
    reason: dict[int, str] = {}
    active = list(range(n)) if budget > 0 else []
    for i in range(n):
        if budget <= 0:
            reason[i] = "budget"
    slack = max(settings.answer_max_new_tokens, 1)

    while active:
        remaining = {i: budget - tokens.count(prefix[i]) for i in active}
        for i in active:
            if remaining[i] <= 0:
                reason[i] = "budget"
        live = {i: r for i, r in remaining.items() if r > 0}
        next_active: list[int] = []
        for group in _buckets(live, slack):
            sampling = Sampling(n=1, temperature=temperature, top_p=top_p,
                                max_new_tokens=max(live[i] for i in group))
            result = backend.generate([conversations[i] for i in group], sampling,
                                      seeds=[derive_seed(seeds[i], "budget-round", rounds[i]) for i in group],
                                      prefixes=[prefix[i] for i in group])
            if on_progress is not None:
                on_progress(len(group), sum(c[0].num_tokens for c in result.completions))
            for i, row in zip(group, result.completions):
                comp = row[0]
                new = comp.text
                spent = comp.finish_reason == "length"
                if tokens.count(new) > live[i]:
                    new, spent = tokens.truncate(new, live[i]), True
                full = prefix[i] + new
                if spent:
                    prefix[i] = full
                    reason[i] = "budget"
                elif rounds[i] < settings.max_rounds:
                    cut, marker = find_cut(full, settings.markers)
                    phrase = settings.continuation[rounds[i] % len(settings.continuation)]
                    prefix[i] = full[:cut] + settings.separator + phrase
                    cuts[i].append(marker)
                    rounds[i] += 1
                    next_active.append(i)
                else:
                    prefix[i] = full
                    reason[i] = "natural" if has_answer(full) else "no_answer"
        active = sorted(next_active)

    force = [i for i in range(n) if reason[i] != "natural"]
    answers: dict[int, tuple[str, bool]] = {}
    if force:
        forced_prefix = {i: prefix[i] + (settings.think_close if think_is_open(prefix[i], settings) else "")
                         + settings.force_answer for i in force}
        sampling = Sampling(n=1, temperature=temperature, top_p=top_p,
                            max_new_tokens=max(settings.answer_max_new_tokens, 1),
                            stop=(settings.answer_close,) if settings.answer_close else ())
        result = backend.generate([conversations[i] for i in force], sampling,
                                  seeds=[derive_seed(seeds[i], "budget-force") for i in force],
                                  prefixes=[forced_prefix[i] for i in force])
        if on_progress is not None:
            on_progress(len(force), sum(c[0].num_tokens for c in result.completions))
        for i, row in zip(force, result.completions):
            text = forced_prefix[i] + row[0].text
            unclosed = bool(settings.answer_close) and settings.answer_close not in row[0].text
            if unclosed:
                text += settings.answer_close
            answers[i] = (text, unclosed)

    out = []
    for i in range(n):
        if i in answers:
            text, unclosed = answers[i]
            out.append(Forced(text, tokens.count(text), tokens.count(prefix[i]), rounds[i], reason[i],
                              True, unclosed, cuts[i]))
        else:
            t = tokens.count(prefix[i])
            out.append(Forced(prefix[i], t, t, rounds[i], "natural", False, False, cuts[i]))
    return out
