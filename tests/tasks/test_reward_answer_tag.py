"""``rewards/answer_tag.py`` called directly: routing, format credit, never raising, parallelism."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skill_factory.tasks import build_task
from skill_factory.tasks.batch import score_batch

REWARD_FILE = Path(__file__).resolve().parents[2] / "rewards" / "answer_tag.py"


@pytest.fixture(scope="module")
def reward():
    # load by path, as verl does
    spec = importlib.util.spec_from_file_location("answer_tag_under_test", REWARD_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLD = '{"numbers":[34,37,26],"target":374}'


@pytest.mark.parametrize(
    "source, response, gold, expected",
    [
        ("countdown", "<answer>34 * (37 - 26)</answer>", GOLD, 1.0),
        ("countdown", "<answer>34 + 37 + 26</answer>", GOLD, 0.0),
        ("countdown", "34 * (37 - 26)", GOLD, 0.0),
        ("countdown", "<answer>34 ** 2</answer>", GOLD, 0.0),
        ("countdown", "<answer>Step 1: 37 - 26 = 11\nStep 2: 34 * 11 = 374</answer>", GOLD, 1.0),
        ("countdown", "<answer>34*(37-26)</answer>", {"numbers": np.array([34, 37, 26]), "target": 374}, 1.0),
        ("Countdown", "<answer>34*(37-26)</answer>", GOLD, 1.0),
        ("longmult", "<answer>1,080</answer>", "1080", 1.0),
        ("gsm8k", "<answer>$7</answer>", "7", 1.0),
        ("csqa", "<answer>(B)</answer>", "B", 1.0),
        ("nope", "<answer>7</answer>", "7", 0.0),
        (None, None, None, 0.0),
        ("countdown", "<answer>1</answer>", "not json", 0.0),
    ],
)
def test_compute_score_table(reward, source, response, gold, expected):
    assert reward.compute_score(data_source=source, solution_str=response, ground_truth=gold, extra_info={}) == expected


def test_format_credit_and_correct_score_via_kwargs(reward):
    wrong, right, untagged = "<answer>1 + 1</answer>", "<answer>34 * (37 - 26)</answer>", "1 + 1"
    assert reward.compute_score("countdown", wrong, GOLD, format_score=0.1) == 0.1
    assert reward.compute_score("countdown", untagged, GOLD, format_score=0.1) == 0.0
    assert reward.compute_score("countdown", right, GOLD, format_score=0.1, correct_score=2) == 2.0
    assert reward.compute_score("countdown", wrong, GOLD, format_score="junk") == 0.0
    # verl may pass extra keyword arguments; they are ignored
    assert reward.compute_score("countdown", right, GOLD, reward_router_address=None, num_turns=1) == 1.0
    assert reward.compute_score_batch(["countdown"] * 2, [wrong, right], [GOLD] * 2, format_score=0.1) == [0.1, 1.0]


@settings(max_examples=80, deadline=None)
@given(
    source=st.one_of(
        st.none(),
        st.text(max_size=12),
        st.sampled_from(["countdown", "longmult", "gsm8k", "csqa", "acronym", "letter_countdown"]),
    ),
    response=st.one_of(
        st.none(), st.integers(), st.text(max_size=200), st.text(max_size=60).map(lambda t: f"<answer>{t}</answer>")
    ),
    gold=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=40),
        st.just(GOLD),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ),
)
def test_reward_never_raises(reward, source, response, gold):
    value = reward.compute_score(source, response, gold)
    assert value in (0.0, 1.0)
    batch = reward.compute_score_batch([source, source], [response, response], [gold, gold], None)
    assert batch == [value, value]


def test_batch_never_raises_on_broken_containers(reward):
    assert reward.compute_score_batch(None, None, None) == []
    assert reward.compute_score_batch([], [], []) == []
    assert reward.compute_score_batch(["countdown"], ["<answer>1</answer>"], []) == [0.0]  # gold missing
    assert reward.compute_score_batch(["countdown"] * 3, ["<answer>1</answer>"] * 3, [GOLD]) == [0.0, 0.0, 0.0]
    assert reward.compute_score_batch(["countdown"], [123], [GOLD], num_workers="x") == [0.0]


def _mixed_batch(n=1200):
    task = build_task("countdown")
    qs = task.questions("train", n // 3, seed=1)
    sources, responses, golds = [], [], []
    for i, q in enumerate(qs):
        for response in (
            f"<think>x</think><answer>{q.meta['solution']}</answer>",
            "<answer>" + "\n".join(q.meta["steps"][:-1]) + "</answer>",
            "garbage" * (i % 7),
        ):
            sources.append("countdown")
            responses.append(response)
            golds.append(q.gold)
    return np.array(sources, dtype=object), responses, golds


def test_parallel_batch_equals_serial_and_per_sample(reward):
    sources, responses, golds = _mixed_batch()
    serial = score_batch(sources, responses, golds, num_workers=1)
    parallel = score_batch(sources, responses, golds, num_workers=2, parallel_min_batch=1)
    per_sample = [reward.compute_score(s, r, g) for s, r, g in zip(sources, responses, golds)]
    assert serial == parallel == per_sample
    assert sum(serial) == len(serial) // 3
    via_file = reward.compute_score_batch(
        sources, responses, golds, [{}] * len(golds), num_workers=2, parallel_min_batch=1
    )
    assert via_file == serial


def test_a_broken_pool_falls_back_to_in_process_scoring(monkeypatch):
    from skill_factory.tasks import batch

    def broken(workers):
        raise RuntimeError("cannot start processes here")

    monkeypatch.setattr(batch, "_pool", broken)
    monkeypatch.setattr(batch, "_POOL_BROKEN", False)
    sources, responses, golds = _mixed_batch(300)
    expected = score_batch(sources, responses, golds, num_workers=1)
    assert score_batch(sources, responses, golds, num_workers=2, parallel_min_batch=1) == expected
    assert batch._POOL_BROKEN is True
    # later batches do not try again
    assert score_batch(sources, responses, golds, num_workers=2, parallel_min_batch=1) == expected


def test_unpicklable_gold_only_costs_that_batch_its_parallelism():
    import threading

    from skill_factory.tasks import batch

    sources, responses, golds = _mixed_batch(300)
    golds = list(golds)
    golds[0] = {"numbers": [1, 2], "target": 3, "lock": threading.Lock()}  # cannot be pickled
    expected = score_batch(sources, responses, golds, num_workers=1)
    assert score_batch(sources, responses, golds, num_workers=2, parallel_min_batch=1) == expected
    assert batch._POOL_BROKEN is False


def test_repeated_answers_in_a_batch_share_one_verdict(reward):
    right, wrong = "<answer>34 * (37 - 26)</answer>", "<answer>34 + 37 + 26</answer>"
    other_gold = '{"numbers":[34,37,26],"target":97}'
    responses = [right, wrong] * 50
    golds = [GOLD, other_gold] * 25 + [other_gold, GOLD] * 25
    expected = [reward.compute_score("countdown", r, g) for r, g in zip(responses, golds)]
    assert score_batch(["countdown"] * 100, responses, golds, num_workers=1) == expected
    assert score_batch(["countdown"] * 100, responses, golds, num_workers=2, parallel_min_batch=1) == expected
    assert sum(expected) == 50


def test_megabyte_responses_are_scored_quickly(reward):
    import time

    padding = "<sample>thinking <answer>1 + 1</answer></sample>\n" * 20_000  # ~1 MB, many inner answers
    cases = [
        (padding + "<answer>34 * (37 - 26)</answer>", 1.0),
        (padding, 0.0),
        ("<answer>" + "9" * 1_000_000 + "</answer>", 0.0),
        ("x" * 1_000_000, 0.0),
    ]
    start = time.perf_counter()
    for response, expected in cases:
        assert reward.compute_score("countdown", response, GOLD) == expected
    assert reward.compute_score_batch(["countdown"] * 4, [c[0] for c in cases], [GOLD] * 4) == [c[1] for c in cases]
    assert time.perf_counter() - start < 2.0
