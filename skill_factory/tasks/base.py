"""Task interface, question records, deterministic generation and the task registry.

Usage::

    from skill_factory.tasks import build_task
    task = build_task("countdown", num_numbers=3)
    qs = task.questions("train", 100, seed=0)
    prompt = task.render(qs[0])
    extracted, correct = task.grade(model_response, qs[0].gold)

Why this shape: every stage (sampling, reflection filtering, RL reward, evaluation) calls
the *same* ``grade``/``score`` of a task, so the verdicts can never disagree. A task's
``score`` depends only on the extracted answer and the gold string, never on the task's
generation parameters, so the reward can score any row from its ``data_source`` and
``ground_truth`` alone.

Generated tasks are seeded **per item**: item ``i`` of split ``s`` is drawn from an RNG
derived from a hash of (task, parameters, seed, split, i, attempt), so the first 100
training questions are the same whether the split has 100 or 8,000 items. Splits are kept
disjoint by a fixed hash partition of a problem key (Countdown: the target), which needs
no knowledge of the other splits and so keeps the prefix property.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import string
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, ClassVar, NamedTuple, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.tasks.answer import MAX_ANSWER_CHARS, as_answer, extract_last_answer

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "eval": "test"}


def canonical_split(split: str) -> str:
    """Map a split name (``train``, ``val``/``validation``, ``test``) to its canonical form."""
    s = str(split).strip().lower()
    s = _SPLIT_ALIASES.get(s, s)
    if s not in SPLITS:
        raise SkillFactoryError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return s


# --- question records ---------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One question of a task, self-contained enough to be rendered and scored anywhere.

    ``fields`` are the values for the prompt template's named placeholders (strings);
    ``gold`` is the gold answer serialised as a string, so it can travel as verl's
    ``reward_model.ground_truth`` and be scored by ``Task.score`` without anything else;
    ``meta`` holds extra facts (a known solution, the raw numbers, a source id).
    """

    id: str
    task: str
    split: str
    index: int
    fields: Mapping[str, str]
    gold: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict:
        """A JSON-serialisable dict (plain types only); ``Question.from_row`` inverts it."""
        return {
            "id": self.id,
            "task": self.task,
            "split": self.split,
            "index": self.index,
            "fields": dict(self.fields),
            "gold": self.gold,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Question:
        return cls(
            id=str(row["id"]),
            task=str(row["task"]),
            split=str(row["split"]),
            index=int(row["index"]),
            fields={str(k): str(v) for k, v in dict(row["fields"]).items()},
            gold=str(row["gold"]),
            meta=dict(row.get("meta") or {}),
        )


# --- templates ----------------------------------------------------------------------


@lru_cache(maxsize=256)
def template_fields(template: str) -> tuple[str, ...]:
    """Names of the placeholders of a ``str.format`` template, validated.

    Only plain named placeholders (``{target}``) are allowed: no positional ``{}``, no
    attribute or index access (``{x.__class__}``, ``{x[0]}``), no conversions or format
    specs. Rendering is then pure substitution and cannot evaluate anything.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SkillFactoryError(
            f"malformed prompt template ({exc}); write literal braces as '{{{{' and '}}}}'"
        ) from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            raise SkillFactoryError(
                f"prompt template placeholder {shown} is not allowed: use plain named placeholders such as {{target}}"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def render_template(template: str, fields: Mapping[str, str], *, task: str = "task") -> str:
    """Substitute ``fields`` into ``template``; unknown placeholders are a user error."""
    missing = [n for n in template_fields(template) if n not in fields]
    if missing:
        raise SkillFactoryError(
            f"{task} prompt template uses unknown placeholder(s) "
            f"{', '.join('{' + m + '}' for m in missing)}; available: "
            f"{', '.join('{' + f + '}' for f in fields)}"
        )
    return template.format_map(dict(fields))


# --- deterministic randomness ---------------------------------------------------------


def _hash64(*parts: object) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update("\x1f".join(str(p) for p in parts).encode("utf-8"))
    return int.from_bytes(h.digest(), "big")


def item_rng(*parts: object) -> random.Random:
    """An RNG seeded from a stable hash of ``parts`` (never Python's salted ``hash``)."""
    return random.Random(_hash64(*parts))


@lru_cache(maxsize=1 << 16)
def split_of(key: str, partition_seed: int, val_fraction: float, test_fraction: float) -> str:
    """Which split a problem key belongs to under a fixed hash partition.

    Independent of the generation seed, so a test split drawn with seed 1 never shares a
    key (for Countdown: a target) with a train split drawn with seed 2.
    """
    u = _hash64("split-partition", partition_seed, key) / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def params_fingerprint(params: Any) -> str:
    """Short stable hash of a params dataclass (changes iff a parameter changes)."""
    payload = json.dumps(dataclasses.asdict(params), sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=4).hexdigest()


@dataclass
class SplitParams:
    """Split-partition settings shared by generated tasks.

    ``val_fraction``/``test_fraction`` of the problem-key space is reserved for the val and
    test splits; the rest is train. ``partition_seed`` fixes the partition itself (keep it
    constant across runs that must not share problems).
    """

    partition_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def problems(self) -> list[tuple[str, str, str]]:
        out = []
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                out.append((name, f"must be strictly between 0 and 1, got {v}", "use e.g. 0.1"))
        if self.val_fraction + self.test_fraction >= 1.0:
            out.append(
                (
                    "test_fraction",
                    "val_fraction + test_fraction must leave room for train",
                    "keep their sum below 1, e.g. 0.1 and 0.1",
                )
            )
        return out


# --- the task interface ---------------------------------------------------------------


class Task(ABC):
    """A task: questions, prompt rendering, answer extraction and scoring.

    Subclasses set ``name``, ``Params`` (a dataclass with a ``problems()`` method listing
    ``(field, what, fix)`` for invalid values), ``default_template`` and ``field_names``,
    and implement ``questions`` and ``_score``.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type]
    default_template: ClassVar[str]
    field_names: ClassVar[tuple[str, ...]]

    _warned: ClassVar[int] = 0

    def __init__(self, params: Any = None, template: Optional[str] = None):
        if params is None:
            params = self.Params()
        if not isinstance(params, self.Params):
            raise SkillFactoryError(f"task {self.name}: expected {self.Params.__name__}, got {type(params).__name__}")
        issues = params.problems()
        if issues:
            text = "; ".join(f"{self.name}.{k}: {what} (fix: {fix})" for k, what, fix in issues)
            raise SkillFactoryError(f"invalid parameters for task {self.name}: {text}")
        self.params = params
        self.template = template if template is not None else self.default_template
        render_fields = template_fields(self.template)
        unknown = [n for n in render_fields if n not in self.field_names]
        if unknown:
            raise SkillFactoryError(
                f"task {self.name}: prompt template uses unknown placeholder(s) "
                f"{', '.join('{' + u + '}' for u in unknown)}; available: "
                f"{', '.join('{' + f + '}' for f in self.field_names)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    # questions ----------------------------------------------------------------
    @abstractmethod
    def questions(self, split: str, size: int, seed: int = 0) -> list[Question]:
        """The first ``size`` questions of ``split`` (deterministic in all arguments)."""

    # prompts --------------------------------------------------------------------
    def render(self, question: Question, template: Optional[str] = None) -> str:
        """User-prompt text for ``question`` from a template with named placeholders."""
        return render_template(template if template is not None else self.template, question.fields, task=self.name)

    # answers ----------------------------------------------------------------------
    def extract(self, response: object) -> Optional[str]:
        """The final answer of a response: content of its last ``<answer>`` block."""
        return extract_last_answer(response)

    def score(self, answer: object, gold: Any) -> bool:
        """Whether ``answer`` (extracted, or a whole tagged response) is correct for ``gold``.

        Never raises: malformed answers and malformed gold are simply wrong. This is the
        single place where correctness is decided for this task.
        """
        return self.score_extracted(as_answer(answer), gold)

    def score_extracted(self, text: Optional[str], gold: Any) -> bool:
        """``score`` for text that is already an extracted answer (the batch reward's hot path)."""
        if not text or type(text) is not str or len(text) > MAX_ANSWER_CHARS:
            return False
        try:
            return bool(self._score(text, gold))
        except Exception:
            if Task._warned < 5:
                Task._warned += 1
                logger.warning("task %s: scorer raised; counted as wrong", self.name, exc_info=True)
            return False

    def grade(self, response: object, gold: Any) -> tuple[Optional[str], bool]:
        """Extract the final answer of ``response`` and score it: ``(extracted, correct)``.

        Unlike ``score``, an untagged response has no answer here: the prompts require tags.
        """
        extracted = self.extract(response)
        if extracted is None:
            return None, False
        return extracted, self.score_extracted(extracted, gold)

    @abstractmethod
    def _score(self, answer: str, gold: Any) -> bool:
        """Score a non-empty, length-bounded extracted answer (may raise; caller catches)."""


class Draw(NamedTuple):
    """One candidate problem produced by a generator."""

    key: str  # identity for de-duplication within a split
    partition_key: str  # what the split partition hashes (Countdown: the target)
    fields: dict
    gold: str
    meta: dict


class GeneratedTask(Task):
    """A task whose questions are generated locally, item by item, from a seeded RNG."""

    max_attempts: ClassVar[int] = 2_000

    @abstractmethod
    def _draw(self, rng: random.Random, split: str) -> Optional[Draw]:
        """Draw one candidate problem for ``split`` (None if this attempt failed)."""

    def tag(self) -> str:
        """Short human-readable summary of the parameters, used in question ids."""
        return params_fingerprint(self.params)

    def in_split(self, partition_key: str, split: str) -> bool:
        p = self.params
        return split_of(partition_key, p.partition_seed, p.val_fraction, p.test_fraction) == split

    def questions(self, split: str, size: int, seed: int = 0) -> list[Question]:
        split = canonical_split(split)
        if size < 0:
            raise SkillFactoryError(f"task {self.name}: split size must be >= 0, got {size}")
        fingerprint = params_fingerprint(self.params)
        tag = self.tag()
        seen: set[str] = set()
        out: list[Question] = []
        for index in range(size):
            for attempt in range(self.max_attempts):
                rng = item_rng(self.name, fingerprint, seed, split, index, attempt)
                cand = self._draw(rng, split)
                if cand is None or cand.key in seen or not self.in_split(cand.partition_key, split):
                    continue
                break
            else:
                raise SkillFactoryError(
                    f"task {self.name}: could not generate question {index} of split {split!r} "
                    f"after {self.max_attempts} attempts: the parameter space is too small for "
                    f"{size} distinct questions; widen the ranges or ask for fewer"
                )
            seen.add(cand.key)
            out.append(
                Question(
                    id=f"{self.name}-{tag}-{split}-s{seed}-{index:05d}",
                    task=self.name,
                    split=split,
                    index=index,
                    fields=cand.fields,
                    gold=cand.gold,
                    meta=cand.meta,
                )
            )
        return out


# --- registry -------------------------------------------------------------------------

_TASKS: dict[str, type[Task]] = {}
_ALIASES: dict[str, str] = {}


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its name and aliases."""
    _TASKS[cls.name] = cls
    _ALIASES[_norm(cls.name)] = cls.name
    for alias in cls.aliases:
        _ALIASES[_norm(alias)] = cls.name
    return cls


def task_names() -> list[str]:
    return sorted(_TASKS)


def resolve_name(name: str) -> Optional[str]:
    """Registry name for ``name`` or one of its aliases, else None.

    Also accepts a data-source string that carries a suffix after ``/`` or ``:``
    (``countdown/4args``), since datasets built elsewhere label their rows that way.
    """
    key = _norm(name)
    if key in _ALIASES:
        return _ALIASES[key]
    for sep in ("/", ":"):
        if sep in key:
            head = key.split(sep, 1)[0]
            if head in _ALIASES:
                return _ALIASES[head]
    return None


def task_class(name: str) -> type[Task]:
    resolved = resolve_name(name)
    if resolved is None:
        raise SkillFactoryError(f"unknown task {name!r}: use one of {', '.join(task_names())}")
    return _TASKS[resolved]


def make_params(cls: type[Task], params: Any = None, **overrides: Any) -> Any:
    """Build ``cls.Params`` from a params object, a mapping, or keyword overrides."""
    P = cls.Params
    if params is None:
        base: dict = {}
    elif isinstance(params, P) and not overrides:
        return params
    elif dataclasses.is_dataclass(params) and not isinstance(params, type):
        base = dataclasses.asdict(params)
    elif isinstance(params, Mapping):
        base = dict(params)
    else:  # an OmegaConf node or similar
        try:
            from omegaconf import OmegaConf

            base = dict(OmegaConf.to_container(params, resolve=True))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - any unreadable params object is a user error
            raise SkillFactoryError(f"task {cls.name}: cannot read parameters from {type(params).__name__}") from None
    base.update(overrides)
    valid = {f.name for f in dataclasses.fields(P)}
    unknown = sorted(set(base) - valid)
    if unknown:
        raise SkillFactoryError(
            f"task {cls.name}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    return P(**base)


def build_task(name: str, params: Any = None, *, template: Optional[str] = None, **overrides: Any) -> Task:
    """Construct a task by registry name: ``build_task("longmult", digits=4)``."""
    cls = task_class(name)
    return cls(make_params(cls, params, **overrides), template=template)


@cache
def default_task(name: str) -> Task:
    """A shared default-parameter instance, enough for scoring (scores ignore params)."""
    return task_class(name)()


def task_for_source(data_source: object) -> Optional[Task]:
    """The task that scores rows labelled ``data_source`` (None if no task claims it)."""
    if not isinstance(data_source, str):
        return None
    resolved = resolve_name(data_source)
    return None if resolved is None else default_task(resolved)


def iter_registered() -> Iterable[type[Task]]:
    return (_TASKS[n] for n in task_names())
