"""Answer-tag reward for verl: 1.0 when the last ``<answer>`` block is correct, else 0.0.

verl loads this file by path. verl 0.9's reward loop (``reward.reward_manager.name=naive``)
calls ``compute_score`` once per sample::

    reward.custom_reward_function.path=rewards/answer_tag.py
    reward.custom_reward_function.name=compute_score

the legacy batch reward manager (the paper's command, older verl) calls
``compute_score_batch``::

    reward_model.reward_manager=batch custom_reward_function.path=rewards/answer_tag.py \
    custom_reward_function.name=compute_score_batch

Thin on purpose: rows are routed by ``data_source`` (the task name, e.g. ``countdown``) to
the same task verifier that sampling, reflection filtering and evaluation use, so the
reward can never disagree with them. Options arrive as keyword arguments
(``reward.custom_reward_function.reward_kwargs``): ``format_score`` (credit for a tagged
but wrong answer, default 0.0), ``correct_score`` (default 1.0), ``num_workers`` and
``parallel_min_batch`` (batch function only). Neither function ever raises.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

try:
    from skill_factory.tasks.batch import score_batch, score_one
except ImportError:  # loaded by path from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from skill_factory.tasks.batch import score_batch, score_one


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _count(value: Any, default: Optional[int]) -> Optional[int]:
    try:
        return default if value is None else max(1, int(value))
    except (TypeError, ValueError):
        return default


def compute_score(
    data_source: Any = None,
    solution_str: Any = None,
    ground_truth: Any = None,
    extra_info: Optional[dict] = None,
    **kwargs: Any,
) -> float:
    """Reward of one response (verl 0.9 per-sample reward loop)."""
    try:
        return score_one(
            data_source,
            solution_str,
            ground_truth,
            correct_score=_number(kwargs.get("correct_score", 1.0), 1.0),
            format_score=_number(kwargs.get("format_score", 0.0), 0.0),
        )
    except Exception:  # noqa: BLE001 - a reward never raises
        return 0.0


def compute_score_batch(
    data_sources: Sequence[Any] = (),
    solution_strs: Sequence[Any] = (),
    ground_truths: Sequence[Any] = (),
    extra_infos: Optional[Sequence[Any]] = None,
    **kwargs: Any,
) -> list:
    """Rewards of a batch, in order (verl's batch reward manager contract)."""
    try:
        return score_batch(
            data_sources,
            solution_strs,
            ground_truths,
            correct_score=_number(kwargs.get("correct_score", 1.0), 1.0),
            format_score=_number(kwargs.get("format_score", 0.0), 0.0),
            num_workers=_count(kwargs.get("num_workers"), None),
            parallel_min_batch=_count(kwargs.get("parallel_min_batch"), 4096) or 4096,
        )
    except Exception:  # noqa: BLE001 - a reward never raises
        try:
            return [0.0] * len(solution_strs)
        except Exception:  # noqa: BLE001
            return []
