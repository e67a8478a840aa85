"""The assistant-trace layout of method.md §4: render one from its parts, parse one back.

    text = render_trace(["<answer>1 + 2</answer>"], ["1 + 2 = 3 <verdict>Correct</verdict>"],
                        glues=[], tail="So my final answer is:", answer="1 + 2")
    parts = parse_trace(text)          # ParsedTrace(samples=[...], reflections=[...], ...)

Why a parser next to the renderer: the layout is the contract with SFT (the model learns to
emit exactly this shape) and with the skill-usage metrics of eval, so tests check every
produced trace by reading it back rather than by string matching fragments.

Layout, every tag on its own line::

    <think>
    <sample>
    {completion 1}
    </sample>
    <reflect>
    {a kept reflection of completion 1}
    </reflect>
    {glue phrase after sample 1}
    ... samples 2..N, no glue after the last
    </think>

    {tail: ending phrase; *C*IC: backtrack phrase, the correct completion again, ending;
     *CC: confirm phrase, ending}

    <answer>
    {final answer}
    </answer>

``no_reflection`` traces have no ``<reflect>`` blocks at all (not empty ones). Parsing is
exact for texts whose completions and reflections do not themselves contain a closing
layout tag on its own line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SAMPLE_OPEN, SAMPLE_CLOSE = "<sample>", "</sample>"
REFLECT_OPEN, REFLECT_CLOSE = "<reflect>", "</reflect>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
# tags that structure a trace; a phrase must not contain them (it would break the layout)
LAYOUT_TAGS = (THINK_OPEN, THINK_CLOSE, SAMPLE_OPEN, SAMPLE_CLOSE, REFLECT_OPEN, REFLECT_CLOSE,
               ANSWER_OPEN, ANSWER_CLOSE)


def render_trace(samples: Sequence[str], reflections: Optional[Sequence[Optional[str]]],
                 glues: Sequence[str], tail: str, answer: str) -> str:
    """The assistant text of one trace.

    ``reflections``: one per sample (None for no block), or None for no blocks at all;
    ``glues``: one per sample but the last.
    """
    if len(glues) != max(len(samples) - 1, 0):
        raise ValueError(f"{len(samples)} samples need {max(len(samples) - 1, 0)} glue phrases, got {len(glues)}")
    parts = [THINK_OPEN]
    last = len(samples) - 1
    for i, sample in enumerate(samples):
        parts += (SAMPLE_OPEN, sample, SAMPLE_CLOSE)
        reflection = None if reflections is None else reflections[i]
        if reflection is not None:
            parts += (REFLECT_OPEN, reflection, REFLECT_CLOSE)
        if i < last:
            parts.append(glues[i])
    parts.append(THINK_CLOSE)
    return "\n".join(parts) + f"\n\n{tail}\n\n{ANSWER_OPEN}\n{answer}\n{ANSWER_CLOSE}"


@dataclass
class ParsedTrace:
    samples: list[str]
    # one per sample; None where the sample has no <reflect> block
    reflections: list[Optional[str]]
    # one per sample but the last
    glues: list[str]
    # everything between </think> and the final <answer> block
    tail: str
    answer: str


class TraceLayoutError(ValueError):
    """The text does not follow the trace layout."""


def _expect(text: str, pos: int, token: str) -> int:
    if not text.startswith(token, pos):
        found = text[pos:pos + len(token) + 10]
        raise TraceLayoutError(f"expected {token!r} at offset {pos}, found {found!r}")
    return pos + len(token)


def _until(text: str, pos: int, token: str) -> int:
    end = text.find(token, pos)
    if end < 0:
        raise TraceLayoutError(f"no {token!r} after offset {pos}")
    return end


def parse_trace(text: str) -> ParsedTrace:
    """Split a trace into its parts; ``TraceLayoutError`` if it does not follow the layout."""
    samples: list[str] = []
    reflections: list[Optional[str]] = []
    glues: list[str] = []
    pos = _expect(text, 0, THINK_OPEN + "\n")
    close_sample = f"\n{SAMPLE_CLOSE}"
    close_reflect = f"\n{REFLECT_CLOSE}"
    end_think = f"\n{THINK_CLOSE}\n\n"
    while True:
        pos = _expect(text, pos, SAMPLE_OPEN + "\n")
        end = _until(text, pos, close_sample)
        samples.append(text[pos:end])
        pos = end + len(close_sample)
        if text.startswith(f"\n{REFLECT_OPEN}\n", pos):
            pos += len(REFLECT_OPEN) + 2
            end = _until(text, pos, close_reflect)
            reflections.append(text[pos:end])
            pos = end + len(close_reflect)
        else:
            reflections.append(None)
        if text.startswith(end_think, pos):
            pos += len(end_think)
            break
        pos = _expect(text, pos, "\n")
        end = _until(text, pos, "\n")
        glues.append(text[pos:end])
        pos = end + 1
    answer_block = f"\n\n{ANSWER_OPEN}\n"
    cut = text.rfind(answer_block, pos)
    if cut < 0:
        raise TraceLayoutError("no final <answer> block after </think>")
    if not text.endswith(f"\n{ANSWER_CLOSE}") or len(text) - len(ANSWER_CLOSE) - 1 < cut + len(answer_block):
        raise TraceLayoutError("the trace does not end with the final </answer> on its own line")
    answer = text[cut + len(answer_block):len(text) - len(ANSWER_CLOSE) - 1]
    return ParsedTrace(samples, reflections, glues, text[pos:cut], answer)
