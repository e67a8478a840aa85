"""Score many responses at once, optionally across worker processes.

Usage::

    from skill_factory.tasks.batch import score_batch
    rewards = score_batch(["countdown"] * n, responses, golds, num_workers=2)

Why it is built this way: GRPO scores (batch x rollouts) responses per step, and
SkillFactory traces are long. Finding the last ``<answer>`` block is a C-speed ``rfind``,
while verifying is Python work; so the parent process extracts the answers and ships
only the short extracted strings to the workers, which verify them. Workers come from a
persistent ``forkserver`` pool (forking a multi-threaded trainer process directly is
unsafe), started once per process and reused. Any failure of the pool falls back to
scoring in-process: a reward must never crash a training step.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Optional

from skill_factory.tasks.answer import MAX_ANSWER_CHARS
from skill_factory.tasks.base import task_for_source

logger = logging.getLogger(__name__)

#: below this many responses, process start-up and pickling cost more than they save
DEFAULT_PARALLEL_MIN_BATCH = 4096

_POOL: Optional[ProcessPoolExecutor] = None
_POOL_WORKERS = 0
# set after the pool fails once (e.g. a start method the host process cannot use): later
# batches score in-process instead of failing and logging again every step
_POOL_BROKEN = False


def _shutdown_pool() -> None:
    global _POOL, _POOL_WORKERS
    if _POOL is not None:
        _POOL.shutdown(wait=False, cancel_futures=True)
    _POOL, _POOL_WORKERS = None, 0


atexit.register(_shutdown_pool)


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL, _POOL_WORKERS
    if _POOL is None or _POOL_WORKERS != workers:
        _shutdown_pool()
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload(["skill_factory.tasks"])
        _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        _POOL_WORKERS = workers
    return _POOL


def _mark_broken() -> None:
    global _POOL_BROKEN
    _POOL_BROKEN = True
    _shutdown_pool()


def score_items(items: Sequence[tuple]) -> list:
    """Worker entry point: ``[(source, extracted_answer, gold), …] -> [bool, …]``."""
    out = []
    tasks: dict = {}
    for source, answer, gold in items:
        try:
            task = tasks[source] if source in tasks else tasks.setdefault(source, task_for_source(source))
            out.append(task is not None and task.score_extracted(answer, gold))
        except Exception:  # noqa: BLE001 - one bad item must not fail the batch
            out.append(False)
    return out


def _reward(correct: bool, has_answer: bool, correct_score: float, format_score: float) -> float:
    if correct:
        return correct_score
    return format_score if has_answer else 0.0


def score_one(
    data_source: Any, response: Any, gold: Any, *, correct_score: float = 1.0, format_score: float = 0.0
) -> float:
    """Reward of one response: ``correct_score``, ``format_score`` (tagged but wrong) or 0.0."""
    try:
        task = task_for_source(data_source)
        if task is None:
            return 0.0
        extracted = task.extract(response)
        if extracted is None:
            return 0.0
        return _reward(task.score_extracted(extracted, gold), True, correct_score, format_score)
    except Exception:  # noqa: BLE001 - never raise from a reward
        return 0.0


def score_batch(
    data_sources: Sequence[Any],
    responses: Sequence[Any],
    golds: Sequence[Any],
    *,
    correct_score: float = 1.0,
    format_score: float = 0.0,
    num_workers: Optional[int] = None,
    parallel_min_batch: int = DEFAULT_PARALLEL_MIN_BATCH,
) -> list:
    """Rewards for a batch, one float per response, in order. Never raises.

    ``num_workers`` defaults to the number of CPUs (at most 8); 1 scores in-process. The
    pool is used only for batches of at least ``parallel_min_batch`` responses.
    """
    try:
        n = len(responses)
    except Exception:  # noqa: BLE001 - an unsized input has no rewards
        return []
    rewards = [0.0] * n
    try:
        # extraction in the parent; verification (maybe) in workers
        pending_idx: list = []
        pending: list = []
        tasks: dict = {}  # routing resolved once per distinct data source
        # GRPO samples many rollouts per prompt and they often end in the same answer:
        # each distinct (task, answer, gold) is verified once and its verdict shared
        first_of: dict = {}
        repeats: list = []
        for i in range(n):
            try:
                source = data_sources[i]
                task = tasks[source] if source in tasks else tasks.setdefault(source, task_for_source(source))
                if task is None:
                    continue
                extracted = task.extract(responses[i])
                if extracted is None:
                    continue
                if not extracted or len(extracted) > MAX_ANSWER_CHARS:
                    rewards[i] = _reward(False, True, correct_score, format_score)
                    continue
                gold = golds[i]
                if type(gold) is str:
                    key = (task.name, extracted, gold)
                    j = first_of.get(key)
                    if j is not None:
                        repeats.append((i, j))
                        continue
                    first_of[key] = len(pending)
                pending_idx.append(i)
                pending.append((task.name, extracted, gold))
            except Exception:  # noqa: BLE001, S112 - an unreadable row scores 0.0
                continue

        workers = num_workers if num_workers is not None else min(os.cpu_count() or 1, 8)
        verdicts: Optional[list] = None
        if workers > 1 and len(pending) >= max(parallel_min_batch, 2) and not _POOL_BROKEN:
            try:
                chunk = max(256, -(-len(pending) // (workers * 4)))
                parts = [pending[k : k + chunk] for k in range(0, len(pending), chunk)]
                verdicts = [v for part in _pool(workers).map(score_items, parts) for v in part]
            except BrokenProcessPool:  # a worker died (e.g. killed): start a new pool next time
                logger.warning("reward worker pool broke; scoring this batch in-process", exc_info=True)
                _shutdown_pool()
            except (RuntimeError, OSError):  # processes cannot be started from this host process
                logger.warning("parallel scoring unavailable; scoring in-process from now on", exc_info=True)
                _mark_broken()
            except Exception:  # e.g. a ground truth that cannot be pickled: this batch only
                logger.warning("parallel scoring failed; scoring this batch in-process", exc_info=True)
            verdicts = verdicts if verdicts is not None and len(verdicts) == len(pending) else None
        if verdicts is None or len(verdicts) != len(pending):
            verdicts = score_items(pending)
        for i, ok in zip(pending_idx, verdicts):
            rewards[i] = _reward(bool(ok), True, correct_score, format_score)
        for i, j in repeats:
            rewards[i] = rewards[pending_idx[j]]
    except Exception:
        logger.warning("batch scoring failed; returning what was scored", exc_info=True)
    return rewards
