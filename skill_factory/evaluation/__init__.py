"""Evaluation: suites, metrics, budget forcing, skill usage and reports (the eval stage's library).

    from skill_factory.evaluation import pass_at_k, skill_usage, budget_force, run_markdown

Modules:

- ``suite``: suite entries from ``eval.tasks`` (held-out Countdown targets, fixed questions,
  the trained prompt variant, loaded tasks opt-in) and the decodings (greedy, sampled);
- ``metrics``: accuracy with a question-level standard error, unbiased pass@k, format rate;
- ``skills``: skill usage read from ``<sample>``/``<reflect>``/``<verdict>`` tags, graded by
  the task's own verifier (no LLM judge);
- ``budget``: s1-style budget forcing on any generation backend;
- ``evaluate``: answering a suite entry, grading, aggregating into results;
- ``report``: results.json, markdown tables and PNG plots, for one run or several.

Importing this package loads no engine and no matplotlib: they load when used.
"""
from skill_factory.evaluation.budget import Forced, ForcingSettings, Marker, budget_force, find_cut
from skill_factory.evaluation.metrics import mean_stderr, pass_at_k, summarize_task
from skill_factory.evaluation.report import comparison_markdown, run_markdown, write_comparison, write_run_report
from skill_factory.evaluation.skills import skill_usage, summarize_skills

__all__ = [
    "Forced",
    "ForcingSettings",
    "Marker",
    "budget_force",
    "comparison_markdown",
    "find_cut",
    "mean_stderr",
    "pass_at_k",
    "run_markdown",
    "skill_usage",
    "summarize_skills",
    "summarize_task",
    "write_comparison",
    "write_run_report",
]
