"""Skill-usage metrics on hand-written responses, including SkillFactory-shaped traces."""
from __future__ import annotations

import pytest

from skill_factory.evaluation.skills import blocks, skill_usage, summarize_skills
from skill_factory.tasks import build_task
from skill_factory.tasks.countdown import make_gold
from skill_factory.tracebuild.layout import render_trace

TASK = build_task("countdown")
GOLD = make_gold([3, 5, 7], 22)
RIGHT, WRONG = "3 * 5 + 7", "3 + 5 + 7"


def grade(text):
    return TASK.grade(text, GOLD)


def sample(expr):
    return f"Let me combine the numbers.\n<answer>{expr}</answer>"


def reflection(verdict):
    return f"Checking the arithmetic.\n<verdict>{verdict}</verdict>"


def usage_and_final(text):
    return skill_usage(text, grade), grade(text)


def test_skillfactory_trace_wrong_then_right():
    text = render_trace([sample(WRONG), sample(RIGHT)], [reflection("Incorrect"), reflection("Correct")],
                        glues=["That was wrong; another way."], tail="So the answer is:", answer=RIGHT)
    u = skill_usage(text, grade)
    assert u["samples"] == 2 and u["reflections"] == 2
    assert u["sample_correct"] == [False, True]
    assert u["sample_answers"] == [WRONG, RIGHT]
    assert u["verdicts"] == [[False, False], [True, True]]
    assert u["sample_verdicts"] == [False, True]
    s = summarize_skills([u], [grade(text)])
    assert s["samples_per_response"] == 2.0 and s["multi_sample_rate"] == 1.0
    assert s["verdict_accuracy"] == 1.0
    assert s["retry_after_incorrect"] == 1.0 and s["stop_after_correct"] == 1.0
    assert s["retry_after_incorrect_verdict"] == 1.0 and s["stop_after_correct_verdict"] == 1.0
    assert s["inner_accuracy"] == 0.5 and s["final_accuracy"] == 1.0
    assert s["any_inner_correct_rate"] == 1.0 and s["final_equals_last_inner"] == 1.0


def test_wrong_verdicts_and_bad_stopping_are_counted():
    # right first but judged Incorrect (model goes on), then wrong judged Correct (model stops)
    text = render_trace([sample(RIGHT), sample(WRONG)], [reflection("Incorrect"), reflection("Correct")],
                        glues=["Hmm."], tail="Final:", answer=WRONG)
    s = summarize_skills([skill_usage(text, grade)], [grade(text)])
    assert s["verdict_accuracy"] == 0.0
    assert s["retry_after_incorrect"] == 0.0  # the wrong sample was the last one
    assert s["stop_after_correct"] == 0.0     # the right sample was followed by another
    assert s["retry_after_incorrect_verdict"] == 1.0  # but it did retry after its own "Incorrect"
    assert s["stop_after_correct_verdict"] == 1.0
    assert s["inner_accuracy"] == 0.5 and s["final_accuracy"] == 0.0 and s["any_inner_correct_rate"] == 1.0


def test_plain_answer_has_no_skill_events():
    u, final = usage_and_final(f"I think it is <answer>{RIGHT}</answer>")
    assert u == {"samples": 0, "reflections": 0, "sample_correct": [], "sample_answers": [], "verdicts": [],
                 "sample_verdicts": []}
    s = summarize_skills([u], [final])
    assert s["samples_per_response"] == 0.0 and s["with_samples_rate"] == 0.0
    for key in ("verdict_accuracy", "retry_after_incorrect", "stop_after_correct", "inner_accuracy",
                "final_accuracy", "final_equals_last_inner"):
        assert s[key] is None  # no event: undefined, not 0


def test_no_reflection_trace_and_unclosed_sample():
    text = render_trace([sample(WRONG), sample(RIGHT)], None, glues=["Again."], tail="So:", answer=RIGHT)
    u = skill_usage(text, grade)
    assert u["samples"] == 2 and u["reflections"] == 0 and u["verdicts"] == []
    # a response cut off inside its third attempt: the open block runs to the end
    cut = "<think>\n<sample>\n<answer>3 + 5 + 7</answer>\n</sample>\n<sample>\nI will try 3 * 5"
    u = skill_usage(cut, grade)
    assert u["samples"] == 2 and u["sample_correct"] == [False, False] and u["sample_answers"] == [WRONG, None]


def test_verdicts_outside_reflect_and_inside_samples():
    # a verdict with no sample before it is ignored; one inside a sample is the sample's own text
    text = ("<verdict>Correct</verdict>\n<sample>\n<answer>3 + 5 + 7</answer> <verdict>Correct</verdict>\n</sample>\n"
            "It is <verdict>Incorrect</verdict> and <verdict>maybe</verdict>\n<sample>\n<answer>3 * 5 + 7</answer>\n"
            "</sample>\n<answer>3 * 5 + 7</answer>")
    u = skill_usage(text, grade)
    assert u["verdicts"] == [[False, False]]  # only the one after sample 1 and outside it, parseable
    assert u["sample_verdicts"] == [False, None]


def test_summary_micro_averages_over_responses():
    a = render_trace([sample(WRONG), sample(RIGHT)], [reflection("Incorrect"), reflection("Correct")],
                     glues=["Again."], tail="So:", answer=RIGHT)
    b = render_trace([sample(RIGHT)], [reflection("Incorrect")], glues=[], tail="So:", answer=RIGHT)
    c = f"<answer>{WRONG}</answer>"
    usages = [skill_usage(t, grade) for t in (a, b, c)]
    s = summarize_skills(usages, [grade(t) for t in (a, b, c)])
    assert s["responses"] == 3
    assert s["samples_per_response"] == 1.0
    assert s["multi_sample_rate"] == pytest.approx(0.3333, abs=1e-4)
    assert s["with_samples_rate"] == pytest.approx(0.6667, abs=1e-4)
    assert s["verdicts"] == 3 and s["verdict_accuracy"] == pytest.approx(0.6667, abs=1e-4)
    assert s["stop_after_correct"] == 1.0 and s["retry_after_incorrect"] == 1.0
    assert s["inner_accuracy"] == pytest.approx(0.6667, abs=1e-4)
    assert s["final_accuracy"] == 1.0  # over the two responses with samples


def test_blocks_parsing():
    assert blocks("a<s>x</s>b<s>y", "<s>", "</s>") == [(1, 9, "x"), (10, 14, "y")]
    assert blocks("<s>x<s>y</s>", "<s>", "</s>") == [(0, 4, "x"), (4, 12, "y")]
    assert blocks("<s>x<r>y</r><s>z", "<s>", "</s>", ends=("<r>",)) == [(0, 4, "x"), (12, 16, "z")]
    assert blocks("none", "<s>", "</s>") == []


def test_unclosed_attempts_end_where_their_check_begins():
    # what a small model writes: an attempt left open, its reflection right after, doubled tags
    text = ("<think>\n<sample>\n<answer>3 + 5 + 7</answer>\n<reflect>\n<reflect>\n3 + 5 + 7 = 15 "
            "<verdict>Incorrect</verdict>\n</reflect>\n</reflect>\n<sample>\n<sample>\n<answer>3 * 5 + 7</answer>"
            "\n<reflect>\n<verdict>Correct</verdict>\n</think>\n<answer>3 * 5 + 7</answer>")
    u = skill_usage(text, grade)
    assert u["samples"] == 3 and u["sample_answers"] == [WRONG, None, RIGHT]
    assert u["verdicts"] == [[False, False], [True, True]] and u["sample_verdicts"] == [False, None, True]
    assert u["reflections"] == 3


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        summarize_skills([skill_usage("x", grade)], [])
