"""Out-of-domain tasks: long multiplication, letter countdown, acronym, GSM8K, CommonsenseQA."""

from __future__ import annotations

import json
import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skill_factory.errors import SkillFactoryError
from skill_factory.tasks import build_task, grade_for_source
from skill_factory.tasks.words import common_words, is_word

# --- long multiplication ------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [2, 3, 4, 5])
def test_longmult_generation(digits):
    task = build_task("longmult", digits=digits)
    qs = task.questions("test", 250, seed=0)
    assert len({(q.meta["a"], q.meta["b"]) for q in qs}) == 250
    for q in qs:
        a, b = q.meta["a"], q.meta["b"]
        assert len(str(a)) == digits and len(str(b)) == digits
        assert q.gold == str(a * b)
        assert task.score(str(a * b), q.gold)
    assert task.questions("test", 10, seed=0) == qs[:10]
    assert qs[0].id.startswith(f"longmult-{digits}x{digits}-test-")
    assert build_task("longmult", digits=2, digits_b=4).questions("test", 1)[0].meta["b"] >= 1000


@pytest.mark.parametrize(
    "answer, correct",
    [
        ("5350050", True),
        ("5,350,050", True),
        ("5350050.0", True),
        ("$5,350,050.", True),
        ("\\boxed{5350050}", True),
        ("1234 * 4335 = 5350050", True),  # last number counts
        ("5350051", False),
        ("5350050.5", False),
        ("5 350 050", True),  # spaces inside a bare number are ignored
        ("٥٣٥٠٠٥٠", False),
        ("9" * 100_000, False),
        ("", False),
        ("five million", False),
    ],
)
def test_longmult_scoring(answer, correct):
    task = build_task("longmult", digits=4)
    assert task.score(answer, "5350050") is correct


@settings(max_examples=40, deadline=None)
@given(a=st.integers(10, 99_999), b=st.integers(10, 99_999), delta=st.integers(1, 10**6))
def test_longmult_property(a, b, delta):
    task = build_task("longmult")
    gold = str(a * b)
    assert task.grade(f"so <answer>{a * b:,}</answer>", gold) == (f"{a * b:,}", True)
    assert not task.score(str(a * b + delta), gold)


# --- word lists ---------------------------------------------------------------------------------------


def test_word_list_validity():
    for word in ["cat", "cats", "boxes", "running", "went", "happier", "stone", "Garden"]:
        assert is_word(word), word
    for word in ["cating", "xqzt", "katherine", "", "ca t", "café", "a1", None, 5]:
        assert not is_word(word), word
    vocab = common_words(5, 7)
    assert len(vocab) > 1000 and list(vocab) == sorted(vocab)
    assert all(is_word(w) for w in vocab[:200])


# --- letter countdown ------------------------------------------------------------------------------------


def test_letter_countdown_generation_and_scoring():
    task = build_task("letter_countdown")
    qs = task.questions("test", 200, seed=0)
    assert len({q.gold for q in qs}) == 200
    for q in qs:
        assert task.score(q.meta["example"], q.gold), q.meta
        assert task.score(q.meta["example"].upper(), q.gold)
    assert task.questions("test", 20, seed=0) == qs[:20]
    assert "<answer>" in task.render(qs[0])


@pytest.mark.parametrize(
    "answer, correct",
    [
        ("garden", True),
        ("danger", True),  # any valid word of the required length
        ("gardens", False),  # needs a second s? no: needs an s that is not given
        ("grand", False),  # too short (min 6)
        ("dragen", False),  # not a word
        ("garded", False),  # d used twice, given once
        ("garden.", True),
        ("g a r d e n", False),
        ("gárden", False),
        ("", False),
        ("garden" * 10_000, False),
    ],
)
def test_letter_countdown_table(answer, correct):
    task = build_task("letter_countdown")
    gold = json.dumps({"letters": "gxardenq", "min_length": 6})
    assert task.score(answer, gold) is correct


# --- acronym -------------------------------------------------------------------------------------------------


def test_acronym_generation_and_scoring():
    task = build_task("acronym")
    qs = task.questions("test", 150, seed=0)
    assert len({q.gold for q in qs}) == 150
    for q in qs:
        assert task.score(q.meta["example"], q.gold), q.meta
        words = q.meta["words"]
        assert len(words) == len(set(words))
    assert task.questions("test", 15, seed=0) == qs[:15]


@pytest.mark.parametrize(
    "answer, correct",
    [
        ("cat", True),  # c(lock) a(pple) t(iger)
        ("act", False),  # letters exist but out of order
        ("cab", False),  # no word starts with b
        ("ca", False),  # too short
        ("cta", False),  # not a word
        ("CAT", True),
    ],
)
def test_acronym_table(answer, correct):
    task = build_task("acronym")
    gold = json.dumps({"words": ["clock", "river", "apple", "moon", "tiger"], "min_length": 3})
    assert task.score(answer, gold) is correct


# --- GSM8K (from fixture files the tests write) ---------------------------------------------------------------

GSM_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A car costs $1,000 plus $80 tax. Total?", "answer": "1000 + 80 = 1080\n#### 1,080"},
    {"question": "Half of 5?", "answer": "#### 2.5"},
]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_gsm8k_from_a_local_file(tmp_path):
    path = _write_jsonl(tmp_path / "gsm8k.jsonl", GSM_ROWS)
    task = build_task("gsm8k", path=str(path))
    qs = task.questions("test", 0)
    assert [q.gold for q in qs] == ["7", "1080", "2.5"]
    assert len(task.questions("test", 2)) == 2
    assert task.render(qs[0]).startswith(GSM_ROWS[0]["question"])
    assert task.grade("3 + 4 = 7 <answer>7</answer>", qs[0].gold) == ("7", True)
    assert task.grade("<answer>$1,080.00</answer>", qs[1].gold)[1]
    assert task.grade("<answer>5/2</answer>", qs[2].gold)[1]
    assert not task.grade("<answer>1081</answer>", qs[1].gold)[1]
    assert len({q.id for q in qs}) == 3
    # the same records from .json, .csv and .parquet
    (tmp_path / "g.json").write_text(json.dumps(GSM_ROWS), encoding="utf-8")
    assert [q.gold for q in build_task("gsm8k", path=str(tmp_path / "g.json")).questions("test", 0)] == [
        "7",
        "1080",
        "2.5",
    ]
    import csv

    with (tmp_path / "g.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(GSM_ROWS)
    assert [q.gold for q in build_task("gsm8k", path=str(tmp_path / "g.csv")).questions("test", 0)] == [
        "7",
        "1080",
        "2.5",
    ]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(GSM_ROWS), tmp_path / "g.parquet")
    assert len(build_task("gsm8k", path=str(tmp_path / "g.parquet")).questions("test", 0)) == 3


def test_gsm8k_user_errors(tmp_path, monkeypatch):
    with pytest.raises(SkillFactoryError, match="file not found"):
        build_task("gsm8k", path=str(tmp_path / "missing.jsonl")).questions("test", 5)
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"problem": "x", "answer": "#### 1"}])
    with pytest.raises(SkillFactoryError, match="question_field"):
        build_task("gsm8k", path=str(bad)).questions("test", 5)
    assert build_task("gsm8k", path=str(bad), question_field="problem").questions("test", 5)[0].gold == "1"
    (tmp_path / "broken.jsonl").write_text('{"question": 1}\n{not json\n', encoding="utf-8")
    with pytest.raises(SkillFactoryError, match=":2"):
        build_task("gsm8k", path=str(tmp_path / "broken.jsonl")).questions("test", 5)
    nonum = _write_jsonl(tmp_path / "nonum.jsonl", [{"question": "q", "answer": "#### many"}])
    with pytest.raises(SkillFactoryError, match="numeric"):
        build_task("gsm8k", path=str(nonum)).questions("test", 5)


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SkillFactoryError, match="offline.*path"):
        build_task("gsm8k").questions("test", 5)


def test_hub_failure_is_a_clear_error(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    fake = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("no route to host")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(SkillFactoryError, match="could not load 'tau/commonsense_qa'.*offline"):
        build_task("csqa").questions("test", 5)


def test_hub_success_path_uses_datasets(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    fake = types.ModuleType("datasets")
    calls = []

    def load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        return GSM_ROWS

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert [q.gold for q in build_task("gsm8k").questions("test", 2)] == ["7", "1080"]
    assert calls == [("openai/gsm8k", "main", "test")]


# --- CommonsenseQA ---------------------------------------------------------------------------------------------------

CSQA_ROWS = [
    {
        "id": "q1",
        "question": "Where would you keep money safe?",
        "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["bank", "river", "oven", "cloud", "shoe"]},
        "answerKey": "A",
    },
    {
        "id": "q2",
        "question": "What do you use to cut paper?",
        "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["spoon", "scissors", "pillow", "cup", "sock"]},
        "answerKey": "B",
    },
]


def test_csqa_from_a_local_file(tmp_path):
    path = _write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS)
    task = build_task("csqa", path=str(path))
    q1, q2 = task.questions("test", 0)
    assert (q1.id, q2.id) == ("q1", "q2")
    prompt = task.render(q2)
    assert "B. scissors" in prompt and "<answer>" in prompt
    assert task.grade("<answer>B</answer>", q2.gold) == ("B", True)
    # parquet keeps the nested choices
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(CSQA_ROWS), tmp_path / "c.parquet")
    assert [q.gold for q in build_task("csqa", path=str(tmp_path / "c.parquet")).questions("test", 0)] == [
        q1.gold,
        q2.gold,
    ]
    # a list of choice strings also works
    simple = _write_jsonl(tmp_path / "simple.jsonl", [{"question": "q", "choices": ["x", "y"], "answerKey": "B"}])
    assert json.loads(build_task("csqa", path=str(simple)).questions("test", 0)[0].gold)["label"] == "B"


@pytest.mark.parametrize(
    "answer, correct",
    [
        ("B", True),
        ("(B)", True),
        ("B.", True),
        ("b", True),
        ("B) scissors", True),
        ("B: scissors", True),
        ("scissors", True),
        ("Scissors.", True),
        ("B) spoon", False),  # letter and text disagree
        ("A", False),
        ("F", False),
        ("spoon", False),
        ("B or C", False),
        ("", False),
        ("the answer", False),
    ],
)
def test_csqa_table(answer, correct):
    gold = json.dumps({"label": "B", "choices": dict(zip("ABCDE", ["spoon", "scissors", "pillow", "cup", "sock"]))})
    assert build_task("csqa").score(answer, gold) is correct


@pytest.mark.parametrize(
    "answer, correct",
    [("B", True), ("(b)", True), ("B) anything", True), ("scissors", False), ("A", False), ("", False)],
)
def test_csqa_bare_letter_gold(answer, correct):
    # without the choice texts only the letter can be checked
    assert build_task("csqa").score(answer, "B") is correct


def test_csqa_bad_records(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"question": "q", "choices": ["x", "y"], "answerKey": "E"}])
    with pytest.raises(SkillFactoryError, match="answer_field"):
        build_task("csqa", path=str(path)).questions("test", 0)
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "options": ["x"], "answerKey": "A"}])
    with pytest.raises(SkillFactoryError, match="choices"):
        build_task("csqa", path=str(path)).questions("test", 0)


# --- routing by data source ---------------------------------------------------------------------------------------------


def test_grade_for_source_routes_and_aliases():
    assert grade_for_source("longmult", "<answer>12</answer>", "12") == ("12", True)
    assert grade_for_source("long_multiplication", "<answer>12</answer>", "12")[1]
    assert grade_for_source("openai/gsm8k", "<answer>12</answer>", "12")[1]
    assert grade_for_source("countdown/3args", "<answer>1 + 2</answer>", '{"numbers":[1,2],"target":3}')[1]
    assert grade_for_source("Countdown", "<answer>1 + 2</answer>", '{"numbers":[1,2],"target":3}')[1]
    assert grade_for_source("chess", "<answer>e4</answer>", "e4") == (None, False)
    assert grade_for_source(None, "<answer>1</answer>", "1") == (None, False)
