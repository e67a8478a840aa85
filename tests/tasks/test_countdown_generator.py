"""Countdown generation: solvable, deterministic, prefix-stable, disjoint splits."""

from __future__ import annotations

import json
import time

import pytest

from skill_factory.errors import SkillFactoryError
from skill_factory.tasks import Question, build_task


@pytest.fixture(scope="module")
def train_8000():
    task = build_task("countdown")
    start = time.perf_counter()
    qs = task.questions("train", 8000, seed=0)
    return task, qs, time.perf_counter() - start


def test_paper_sized_train_split_is_fast_solvable_and_unique(train_8000):
    task, qs, seconds = train_8000
    assert seconds < 10
    assert len(qs) == 8000
    assert len({(tuple(sorted(q.meta["numbers"])), q.meta["target"]) for q in qs}) == 8000
    assert len({q.id for q in qs}) == 8000
    for q in qs:
        assert len(q.meta["numbers"]) == 3
        assert all(1 <= n <= 100 for n in q.meta["numbers"])
        assert 1 <= q.meta["target"] <= 1000
        assert task.score(q.meta["solution"], q.gold)
        assert task.score("\n".join(q.meta["steps"]), q.gold)


def test_all_four_operations_appear(train_8000):
    _, qs, _ = train_8000
    ops = {s.split()[3] for q in qs for s in q.meta["steps"]}
    assert ops == {"+", "-", "*", "/"}


def test_prefix_property_and_determinism():
    task = build_task("countdown")
    small = task.questions("train", 100, seed=3)
    large = task.questions("train", 1000, seed=3)
    assert small == large[:100]
    assert build_task("countdown").questions("train", 100, seed=3) == small
    assert task.questions("train", 100, seed=4) != small


def test_eval_sizes_for_two_to_six_numbers_are_fast():
    start = time.perf_counter()
    for n in range(2, 7):
        task = build_task("countdown", num_numbers=n)
        qs = task.questions("test", 250, seed=0)
        assert len({q.gold for q in qs}) == 250
        assert all(len(q.meta["numbers"]) == n for q in qs)
        assert all(task.score(q.meta["solution"], q.gold) for q in qs)
    assert time.perf_counter() - start < 10


def test_held_out_targets_and_no_duplicates_across_splits():
    task = build_task("countdown")
    splits = {s: task.questions(s, n, seed=0) for s, n in [("train", 3000), ("val", 300), ("test", 300)]}
    targets = {s: {q.meta["target"] for q in qs} for s, qs in splits.items()}
    assert not targets["train"] & targets["test"]
    assert not targets["train"] & targets["val"]
    assert not targets["val"] & targets["test"]
    golds = [q.gold for qs in splits.values() for q in qs]
    assert len(golds) == len(set(golds))
    # the partition does not depend on the generation seed
    other_seed = {q.meta["target"] for q in task.questions("test", 300, seed=99)}
    assert not other_seed & targets["train"]


def test_question_records_round_trip_and_render():
    task = build_task("countdown")
    q = task.questions("val", 1, seed=0)[0]
    row = q.to_row()
    assert json.loads(json.dumps(row)) == row
    assert Question.from_row(row) == q
    assert json.loads(q.gold) == {"numbers": q.meta["numbers"], "target": q.meta["target"]}
    prompt = task.render(q)
    assert q.fields["numbers"] in prompt and q.fields["target"] in prompt
    assert "<answer>" in prompt and "Step 1:" in prompt
    assert task.render(q, "Make {target} from {numbers}.") == f"Make {q.fields['target']} from {q.fields['numbers']}."
    assert q.id.startswith("countdown-n3-val-s0-")


@pytest.mark.parametrize(
    "template",
    ["{numbers.__class__}", "{numbers[0]}", "{numbers!r}", "{target:>10}", "{}", "{0}", "{unknown}", "{oops"],
)
def test_templates_are_substitution_only(template):
    task = build_task("countdown")
    q = task.questions("train", 1)[0]
    with pytest.raises(SkillFactoryError):
        task.render(q, template)
    with pytest.raises(SkillFactoryError):
        build_task("countdown", template=template)


def test_impossible_parameter_space_is_a_clear_error():
    task = build_task("countdown", num_numbers=2, min_number=1, max_number=2, min_target=1, max_target=4)
    with pytest.raises(SkillFactoryError, match="too small"):
        task.questions("train", 50)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"num_numbers": 1}, "num_numbers"),
        ({"min_number": 50, "max_number": 10}, "max_number"),
        ({"min_target": 0}, "min_target"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "test_fraction"),
    ],
)
def test_invalid_parameters(overrides, key):
    with pytest.raises(SkillFactoryError, match=key):
        build_task("countdown", **overrides)


def test_unknown_parameter_and_task_names():
    with pytest.raises(SkillFactoryError, match="num_numbrs"):
        build_task("countdown", num_numbrs=3)
    with pytest.raises(SkillFactoryError, match="unknown task"):
        build_task("chess")
    with pytest.raises(SkillFactoryError, match="split"):
        build_task("countdown").questions("holdout", 3)
