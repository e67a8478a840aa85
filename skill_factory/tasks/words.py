"""English word lists for the letter-countdown and acronym tasks.

Usage::

    from skill_factory.tasks.words import is_word, common_words
    is_word("boxes")          # True
    common_words(4, 7)[:3]    # sorted, deterministic list of everyday words

Why two PyPI packages, both pure data:

* ``english-words`` (web2 + GCIDE dictionaries) decides what is a word. Only entries
  written in lower case in web2 are taken, which leaves out proper nouns ("Katherine").
  Neither list has regular inflections ("cats", "boxes"), so
* ``pyspellchecker``'s English frequency table (counts from large corpora) supplies them:
  an inflected form is accepted when the corpus attests it often enough *and* stripping a
  regular suffix gives a dictionary word. "boxes" passes; an invented "cating" does not.
  The same counts pick **common** words for generation, so generated problems are built
  from everyday words instead of dictionary curiosities such as "aalii".

Both lists load lazily on first use (about half a second) and are cached per process.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from skill_factory.errors import SkillFactoryError

logger = logging.getLogger(__name__)

#: minimum corpus count for an inflected form to be accepted as a word
INFLECTION_MIN_COUNT = 200
#: minimum corpus count for a word to be used when *generating* problems
COMMON_MIN_COUNT = 2000

# (suffix, replacement) pairs that undo a regular English inflection
_SUFFIXES = (
    ("ies", "y"),
    ("ied", "y"),
    ("ier", "y"),
    ("iest", "y"),
    ("es", ""),
    ("s", ""),
    ("ed", ""),
    ("ed", "e"),
    ("d", ""),
    ("ing", ""),
    ("ing", "e"),
    ("er", ""),
    ("er", "e"),
    ("est", ""),
    ("est", "e"),
)


def _is_plain(word: str) -> bool:
    return word.isascii() and word.isalpha()


@lru_cache(maxsize=1)
def dictionary_words() -> frozenset:
    """Lower-case ASCII dictionary words (web2 lower-case entries plus GCIDE)."""
    try:
        from english_words import get_english_words_set
    except ImportError:  # pragma: no cover - dependency missing
        raise SkillFactoryError(
            "the word tasks need the 'english-words' package: pip install english-words==2.0.2"
        ) from None
    web2 = get_english_words_set(["web2"], lower=False)
    gcide = get_english_words_set(["gcide"], lower=True)
    words = {w for w in web2 if _is_plain(w) and w.islower()}
    words.update(w for w in gcide if _is_plain(w))
    logger.debug("loaded %d dictionary words", len(words))
    return frozenset(words)


@lru_cache(maxsize=1)
def word_counts() -> dict:
    """Corpus counts of English word forms (pyspellchecker's frequency table)."""
    try:
        from spellchecker import SpellChecker
    except ImportError:  # pragma: no cover - dependency missing
        raise SkillFactoryError(
            "the word tasks need the 'pyspellchecker' package: pip install pyspellchecker==0.9.1"
        ) from None
    table = SpellChecker(language="en", distance=1).word_frequency.dictionary
    return {w: int(c) for w, c in table.items() if _is_plain(w)}


def _doubled_base(stem: str) -> str:
    # running -> runn -> run ; stopped -> stopp -> stop
    if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in "aeiou":
        return stem[:-1]
    return ""


@lru_cache(maxsize=1 << 16)
def is_word(word: object) -> bool:
    """Whether ``word`` is an English word (case-insensitive, letters only)."""
    if not isinstance(word, str):
        return False
    w = word.strip().lower()
    if not w or len(w) > 40 or not _is_plain(w):
        return False
    words = dictionary_words()
    if w in words:
        return True
    if word_counts().get(w, 0) < INFLECTION_MIN_COUNT:
        return False
    for suffix, repl in _SUFFIXES:
        if w.endswith(suffix) and len(w) > len(suffix) + 1:
            stem = w[: -len(suffix)]
            base = stem + repl
            if base in words:
                return True
            if not repl and _doubled_base(stem) in words:
                return True
    return False


@lru_cache(maxsize=16)
def common_words(min_length: int, max_length: int) -> tuple:
    """Everyday dictionary words with ``min_length..max_length`` letters, sorted.

    Sorted so that generation is deterministic (set iteration order is not).
    """
    counts = word_counts()
    words = dictionary_words()
    return tuple(
        sorted(w for w in words if min_length <= len(w) <= max_length and counts.get(w, 0) >= COMMON_MIN_COUNT)
    )
