"""Evaluation suites: which tasks, with which parameters, prompts and test questions.

    entries, skipped = build_suite(cfg)           # typed SkillFactoryConfig
    for e in entries: e.key, e.task, e.questions, e.prompt(q)

A suite (``eval.tasks`` in ``conf/eval/*.yaml``) maps an entry key (``countdown_5``) to a task
registry name, parameters, a size and an optional template. Rules that keep runs comparable:

- **Held-out targets.** An entry of the training task starts from the training task's own
  parameter block (``task.countdown``) and overrides only what it names (``num_numbers``), so
  its test split is drawn under the same target partition as training: no test target was
  ever a training target, whatever partition settings the run uses.
- **Same questions for every run.** Questions come from the ``test`` split with
  ``eval.question_seed`` (not the run seed), so a seed sweep, a baseline and an RL run are all
  scored on identical questions.
- **The prompt the model was trained on.** Training-task entries are rendered with the prompt
  variant ``eval.prompt_variant`` (``prompts.variants``) and the run's system prompt; other
  tasks with their own default template, unless an entry names one.
- **Loaded tasks are opt-in.** GSM8K and CommonsenseQA need a local file or a hub id in the
  entry's params; without either the entry is skipped with a warning, so the OOD suite runs
  offline out of the box.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.tasks.base import GeneratedTask, Question, Task, make_params, resolve_name, task_class

log = logging.getLogger(__name__)

GREEDY, SAMPLED = "greedy", "sampled"


@dataclass(frozen=True)
class Decoding:
    name: str
    n: int
    temperature: float
    top_p: float


def decodings(e: Any) -> list[Decoding]:
    """The decodings an ``eval`` section asks for: greedy, and sampled when temperature > 0."""
    if e.temperature <= 0:
        return [Decoding(GREEDY, 1, 0.0, 1.0)]
    out = [Decoding(GREEDY, 1, 0.0, 1.0)] if e.greedy else []
    return out + [Decoding(SAMPLED, int(e.n), float(e.temperature), float(e.top_p))]


@dataclass
class SuiteEntry:
    key: str
    task_name: str
    task: Task
    # the resolved parameters (the params dataclass as a dict)
    params: dict
    size: int
    system: Optional[str]
    questions: list[Question] = field(default_factory=list)

    def prompt(self, question: Question) -> str:
        return self.task.render(question)


def entry_params(cfg: Any, spec: Any) -> tuple[type[Task], Any]:
    """Task class and params object of a suite entry (training-task entries inherit the
    training block)."""
    name = resolve_name(spec.task) if isinstance(spec.task, str) else None
    if name is None:
        raise SkillFactoryError(f"unknown task {spec.task!r}")
    cls = task_class(name)
    base: Any = None
    if resolve_name(cfg.task.name) == name:
        base = getattr(cfg.task, name, None)
    overrides = dict(spec.params or {})
    if base is not None:
        merged = dataclasses.asdict(base) if dataclasses.is_dataclass(base) else dict(base)
        merged.update(overrides)
        return cls, make_params(cls, merged)
    return cls, make_params(cls, overrides)


def entry_template(cfg: Any, spec: Any, name: str) -> Optional[str]:
    """The entry's template: its own, else for the training task the chosen prompt variant
    (or ``task.template``), else the task's default (None)."""
    if spec.template is not None:
        return spec.template
    if resolve_name(cfg.task.name) == name:
        variant = cfg.eval.prompt_variant
        if variant is not None:
            return cfg.prompts.variants[variant]
        return cfg.task.template
    return None


def is_loaded(cls: type[Task]) -> bool:
    """A task read from a file or the hub (GSM8K, CSQA), not generated locally."""
    return not issubclass(cls, GeneratedTask)


def build_suite(cfg: Any, load_questions: bool = True) -> tuple[list[SuiteEntry], dict[str, str]]:
    """The suite's entries (questions drawn) and the skipped ones with the reason."""
    entries: list[SuiteEntry] = []
    skipped: dict[str, str] = {}
    for key, spec in cfg.eval.tasks.items():
        cls, params = entry_params(cfg, spec)
        if is_loaded(cls) and not getattr(params, "path", None) and not getattr(params, "hub_id", None):
            reason = (f"no data: set eval.tasks.{key}.params.path to a local file "
                      f"(or params.hub_id to a hub dataset when online)")
            log.warning("eval: skipping %s (%s)", key, reason)
            skipped[key] = reason
            continue
        task = cls(params, template=entry_template(cfg, spec, cls.name))
        entry = SuiteEntry(key, cls.name, task, dataclasses.asdict(params), int(spec.size), cfg.prompts.system)
        if load_questions:
            entry.questions = task.questions("test", entry.size, seed=cfg.eval.question_seed)
            if not entry.questions:
                raise SkillFactoryError(f"eval.tasks.{key}: the task gave no test questions; "
                                        "check its params (path / hub_id) and size")
        entries.append(entry)
    return entries, skipped


def select(entries: list[SuiteEntry], names: list[str]) -> list[SuiteEntry]:
    """Entries named by entry key or task name ([] = all)."""
    if not names:
        return list(entries)
    wanted = set(names)
    return [e for e in entries if e.key in wanted or e.task_name in wanted]


def check(cfg: Any, problems: Any) -> None:
    """Problems of the suite that need the rest of the config (the stage's check hook)."""
    e = cfg.eval
    if not e.tasks:
        problems.add("eval.tasks", "is empty", "choose a suite (eval=countdown, ood, paper, tiny) or add entries")
    variant = e.prompt_variant
    if variant is not None and variant not in (cfg.prompts.variants or {}):
        problems.add("eval.prompt_variant", f"'{variant}' is not a prompt variant of prompts.variants "
                     f"({', '.join(cfg.prompts.variants or {})})",
                     "name one of them, or null for task.template")
    keys_and_tasks: set[str] = set()
    for key, spec in e.tasks.items():
        where = f"eval.tasks.{key}"
        name = resolve_name(spec.task) if isinstance(spec.task, str) else None
        if name is None:
            from skill_factory.tasks.base import task_names

            problems.add(f"{where}.task", f"unknown task {spec.task!r}", f"use one of {', '.join(task_names())}")
            continue
        keys_and_tasks.update((key, name, spec.task))
        try:
            cls, params = entry_params(cfg, spec)
        except (SkillFactoryError, TypeError) as exc:
            problems.add(f"{where}.params", str(exc), "remove or rename the unknown parameters")
            continue
        for sub, what, fix in params.problems():
            problems.add(f"{where}.params.{sub}", what, fix)
        if spec.size < 0 or (spec.size == 0 and not is_loaded(cls)):
            problems.add(f"{where}.size", f"must be >= 1 for a generated task, got {spec.size}",
                         "use e.g. 250 (0 means every record, for gsm8k / csqa only)")
        if spec.template is not None:
            from skill_factory.tasks.base import template_fields

            try:
                unknown = [f for f in template_fields(spec.template) if f not in cls.field_names]
            except SkillFactoryError as exc:
                problems.add(f"{where}.template", str(exc), "fix the placeholders")
                continue
            if unknown:
                problems.add(f"{where}.template", f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}",
                             f"use only {', '.join('{' + f + '}' for f in cls.field_names)}")
    bf = e.budget_forcing
    if bf.budgets:
        for i, name in enumerate(bf.tasks):
            if name not in keys_and_tasks:
                problems.add(f"eval.budget_forcing.tasks[{i}]", f"'{name}' is neither an entry of eval.tasks nor "
                             "the task of one", "name an entry key or a task name, or use [] for all")
        top = max(bf.budgets) + bf.answer_max_new_tokens
        if top >= cfg.model.max_length:
            problems.add("eval.budget_forcing.budgets", f"the largest budget plus answer_max_new_tokens ({top}) "
                         f"leaves no room for the prompt within model.max_length={cfg.model.max_length}",
                         "lower the budgets or answer_max_new_tokens")
    if e.max_new_tokens >= cfg.model.max_length:
        problems.add("eval.max_new_tokens", f"{e.max_new_tokens} leaves no room for the prompt within "
                     f"model.max_length={cfg.model.max_length}", "lower eval.max_new_tokens")
