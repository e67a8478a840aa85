"""Parse a reflection's verdict: the first ``<verdict>…</verdict>`` tag decides.

Why first, not last: a reflection commits to one judgement; later tags are the model
rambling on. The tag and its content are case-insensitive and trimmed; anything other
than Correct / Incorrect (or no tag at all) is no verdict, so the reflection can never be
kept by the filter that compares verdicts with the verifier.
"""
from __future__ import annotations

import re
from typing import Optional

_VERDICT = re.compile(r"<\s*verdict\s*>(.*?)<\s*/\s*verdict\s*>", re.IGNORECASE | re.DOTALL)
_MAX_CHARS = 1 << 20


def parse_verdict(text: object) -> Optional[bool]:
    """True for Correct, False for Incorrect, None when there is no usable verdict."""
    if not isinstance(text, str):
        return None
    match = _VERDICT.search(text[:_MAX_CHARS])
    if match is None:
        return None
    word = match.group(1).strip().lower()
    return {"correct": True, "incorrect": False}.get(word)
