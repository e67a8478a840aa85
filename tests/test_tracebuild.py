"""The trace builder: every format read back from its text, determinism, skip accounting."""
from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from skill_factory.errors import SkillFactoryError
from skill_factory.stages.reflect import compile_banned
from skill_factory.tracebuild import (
    FORMATS,
    LAYOUT_TAGS,
    REASONS,
    EmptyTracesError,
    PhrasePools,
    RawRows,
    TraceLayoutError,
    TraceOptions,
    build_traces,
    parse_trace,
    phrase_problems,
    render_trace,
)

CONF = Path(__file__).resolve().parent.parent / "conf"
PHRASES = PhrasePools.from_config(OmegaConf.load(CONF / "phrases" / "default.yaml"))
VARIANTS = ("original", "plan_and_execute", "alternatively", "rephrase")
OK, BAD = "looks fine <verdict>Correct</verdict>", "found a slip <verdict>Incorrect</verdict>"


def raw(spec, kept_flags=False, question_ids=True):
    """RawRows from {question: [(variant, correct, kept reflections), ...]}.

    Each completion gets ``kept`` agreeing reflections and one disagreeing one; its text and
    answer name it uniquely.
    """
    cols = {k: [] for k in ("question", "completion", "is_correct", "reflections", "extracted_answer",
                            "prompt_variant", "kept", "question_id", "completion_id")}
    for q, completions in spec.items():
        for j, (variant, correct, kept) in enumerate(completions):
            agree, disagree = (OK, BAD) if correct else (BAD, OK)
            reflections = [f"{q}/{j} check {r}: {agree}" for r in range(kept)] + [f"{q}/{j} wrong: {disagree}"]
            # with ids, one rendered prompt per variant (as the sample stage writes); without, one text
            cols["question"].append(f"Question {q} under {variant}" if question_ids else f"Question {q}")
            cols["completion"].append(f"Attempt {j} at {q}.\n<answer>{q}-{j}</answer>")
            cols["is_correct"].append(correct)
            cols["reflections"].append(reflections)
            cols["extracted_answer"].append(f"{q}-{j}")
            cols["prompt_variant"].append(variant)
            cols["kept"].append([True] * kept + [False])
            cols["question_id"].append(q)
            cols["completion_id"].append(f"{q}/{variant}/{j}")
    if not kept_flags:
        cols["kept"] = None
    if not question_ids:
        cols["question_id"] = cols["completion_id"] = None
    return RawRows(**cols)


def rich(questions=12, seed=0):
    """Questions with 4 variants x 3 samples, mixed correctness, some unkept completions."""
    rng = random.Random(seed)
    spec = {}
    for i in range(questions):
        rows = []
        for v in VARIANTS:
            for _ in range(3):
                rows.append((v, rng.random() < 0.5, rng.choice([0, 1, 1, 2])))
        rows[0] = ("original", True, 1)  # every question has a usable correct and incorrect
        rows[1] = ("original", False, 2)
        rows[3] = ("plan_and_execute", True, 2)
        spec[f"q{i:02d}"] = rows
    return spec


def index(rows: RawRows):
    """completion id -> (text, correct, answer, kept reflections, variant)."""
    out = {}
    for i in range(len(rows)):
        kept = [r for r, k in zip(rows.reflections[i], rows.kept[i] if rows.kept else
                                  [("Correct" in r) == rows.is_correct[i] for r in rows.reflections[i]]) if k]
        out[rows.completion_id[i]] = (rows.completion[i].strip(), rows.is_correct[i], rows.extracted_answer[i],
                                      kept, rows.prompt_variant[i])
    return out


def check_row(rec, src, phrases=PHRASES):
    """Parse one built row back and check it against its source completions."""
    fmt, n = rec["format"], rec["n_samples"]
    user, assistant = rec["conversations"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    parsed = parse_trace(assistant["content"])
    ids = rec["completion_ids"]
    assert len(parsed.samples) == n == len(ids) == len(rec["sample_correct"])
    assert len(set(ids)) == n, "a completion appears twice in one trace"
    sources = [src[i] for i in ids]
    assert parsed.samples == [s[0] for s in sources]
    assert rec["sample_correct"] == [s[1] for s in sources]
    if fmt == "no_reflection":
        assert parsed.reflections == [None] * n and "<reflect>" not in assistant["content"]
    else:
        for reflection, s in zip(parsed.reflections, sources):
            assert reflection in s[3], "a reflection that was not kept"
    assert len(parsed.glues) == n - 1  # no glue after the last sample
    for glue, s in zip(parsed.glues, sources):
        if fmt == "no_reflection":
            assert glue in phrases.generic
        elif s[1]:
            assert glue in phrases.after_correct + phrases.generic
        else:
            assert glue in phrases.after_incorrect + phrases.generic
    if fmt == "0C":
        assert n == 1
    if fmt in ("0C", "*C", "*C_full", "no_reflection"):
        assert sources[-1][1], f"{fmt} must end on a correct sample"
    if fmt == "*CC":
        assert sources[-1][1] and sources[-2][1]
    if fmt == "*C*IC":
        assert not sources[-1][1] and any(s[1] for s in sources[:-1])
        back = next(s for s in reversed(sources[:-1]) if s[1])
        first, restated, ending = parsed.tail.split("\n", 1)[0], parsed.tail.split("\n", 1)[1], None
        assert first in phrases.backtrack
        restated, ending = restated.rsplit("\n", 1)
        assert restated == back[0] and ending in phrases.ending
        assert parsed.answer == back[2]
    else:
        assert parsed.answer == sources[-1][2]
        if fmt == "*CC":
            confirm, ending = parsed.tail.split("\n")
            assert confirm in phrases.confirm and ending in phrases.ending
        else:
            assert parsed.tail in phrases.ending
    return parsed, sources


# --- layout ----------------------------------------------------------------------------


def test_layout_round_trip_and_exact_text():
    text = render_trace(["a <answer>1</answer>", "b"], ["r1", "r2"], ["glue"], "End:", "1")
    assert text == ("<think>\n<sample>\na <answer>1</answer>\n</sample>\n<reflect>\nr1\n</reflect>\nglue\n"
                    "<sample>\nb\n</sample>\n<reflect>\nr2\n</reflect>\n</think>\n\nEnd:\n\n<answer>\n1\n</answer>")
    parsed = parse_trace(text)
    assert (parsed.samples, parsed.reflections, parsed.glues, parsed.tail, parsed.answer) == (
        ["a <answer>1</answer>", "b"], ["r1", "r2"], ["glue"], "End:", "1")
    bare = render_trace(["", "x"], None, ["g"], "E", "")
    assert bare == "<think>\n<sample>\n\n</sample>\ng\n<sample>\nx\n</sample>\n</think>\n\nE\n\n<answer>\n\n</answer>"
    assert parse_trace(bare).samples == ["", "x"] and parse_trace(bare).reflections == [None, None]


@pytest.mark.parametrize("bad", ["", "<think>\n</think>", "<think>\n<sample>\nx\n</sample>\n</think>\n\nE",
                                 "<think>\n<sample>\nx\n</sample>\n</think>\n\nE\n\n<answer>\n1\n</answer>\nmore"])
def test_parse_rejects_text_off_the_layout(bad):
    with pytest.raises(TraceLayoutError):
        parse_trace(bad)


# --- formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("distinct", [False, True])
def test_every_row_of_every_format_parses_back(fmt, distinct):
    rows = raw(rich())
    n = 4 if distinct else 5
    result = build_traces(rows, TraceOptions(formats=(fmt,), n_samples=n, distinct_variants=distinct, seed=3),
                          PHRASES)
    src = index(rows)
    assert len(result) > 0 and set(result.format) == {fmt}
    for rec in result.records():
        _, sources = check_row(rec, src)
        variants = [s[4] for s in sources]
        if distinct:
            assert len(set(variants)) == len(variants)
    by_n = Counter(result.n_samples)
    questions = result.stats["input"]["questions"]
    if fmt in ("*C_full", "random", "no_reflection"):
        # one trace per n in 1..N per question (these questions support every n)
        assert by_n == {k: questions for k in range(1, n + 1)}
    elif fmt == "0C":
        assert by_n == {1: questions}
    else:
        assert set(by_n) == {n}


def test_random_format_may_end_on_an_incorrect_sample():
    rows = raw(rich(30))
    result = build_traces(rows, TraceOptions(formats=("random",), n_samples=3, seed=1), PHRASES)
    src = index(rows)
    assert any(not rec["sample_correct"][-1] for rec in result.records())
    for rec in result.records():
        check_row(rec, src)


def test_star_c_and_star_c_full_rows_are_labelled_apart():
    rows = raw(rich(4))
    result = build_traces(rows, TraceOptions(formats=("*C", "*C_full"), n_samples=3), PHRASES)
    got = Counter(zip(result.format, result.n_samples))
    assert got == {("*C", 3): 4, ("*C_full", 1): 4, ("*C_full", 2): 4, ("*C_full", 3): 4}


def test_the_four_formats_of_the_released_script_together():
    rows = raw(rich(8))
    result = build_traces(rows, TraceOptions(formats=("0C", "*C", "*C*IC", "*CC"), n_samples=4), PHRASES)
    assert Counter(result.format) == {"0C": 8, "*C": 8, "*C*IC": 8, "*CC": 8}
    src = index(rows)
    for rec in result.records():
        check_row(rec, src)


def test_random_n_repeats_and_variant_restriction():
    rows = raw(rich(10))
    result = build_traces(rows, TraceOptions(formats=("*C", "*C*IC"), n_samples=5, random_n=True, repeats=3),
                          PHRASES)
    assert len(result) == 10 * 3 * 2
    assert set(result.n_samples) <= {2, 3, 4, 5} and len(set(result.n_samples)) > 1
    only = build_traces(rows, TraceOptions(formats=("*C_full",), n_samples=2, variants=("original",)), PHRASES)
    src = index(rows)
    assert all(src[c][4] == "original" for ids in only.completion_ids for c in ids)
    assert only.stats["input"]["rows_outside_variants"] == 10 * 9


def test_user_turn_comes_from_the_user_variant():
    rows = raw({"q": [("rephrase", True, 1), ("original", True, 1), ("alternatively", False, 1)]})
    result = build_traces(rows, TraceOptions(formats=("0C",)), PHRASES)
    assert result.user == ["Question q under original"]
    other = build_traces(rows, TraceOptions(formats=("0C",), user_variant="nope"), PHRASES)
    assert other.user == ["Question q under alternatively"]  # first variant by name
    # restricting the variants used does not change the user turn
    restricted = build_traces(rows, TraceOptions(formats=("0C",), variants=("rephrase",)), PHRASES)
    assert restricted.user == ["Question q under original"]


def test_questions_are_grouped_by_text_without_ids_and_ids_are_content_hashes():
    spec = {"a": [("original", True, 1), ("original", False, 1)], "b": [("original", True, 1)]}
    rows = raw(spec, question_ids=False)
    result = build_traces(rows, TraceOptions(formats=("0C",)), PHRASES)
    assert len(result) == 2 and len(set(result.question_id)) == 2
    assert all(len(ids) == 1 and ids[0].startswith("h") for ids in result.completion_ids)


def test_phrase_pools_can_be_swapped():
    pools = PhrasePools(generic=("G.",), after_correct=("C.",), after_incorrect=("I.",), ending=("E:",),
                        backtrack=("B.",), confirm=("K.",))
    rows = raw(rich(5))
    result = build_traces(rows, TraceOptions(formats=("*C_full", "*C*IC", "*CC"), n_samples=3), pools)
    src = index(rows)
    for rec in result.records():
        check_row(rec, src, pools)


def test_default_phrase_file_is_well_formed():
    for f in dataclasses.fields(PhrasePools):
        pool = getattr(PHRASES, f.name)
        assert 7 <= len(pool) <= 14, f.name
    all_phrases = [p for f in dataclasses.fields(PhrasePools) for p in getattr(PHRASES, f.name)]
    assert len(all_phrases) == len(set(all_phrases)), "pools must be disjoint so a glue's pool is known"
    assert phrase_problems(PHRASES, FORMATS, 5) == []
    bad = dataclasses.replace(PHRASES, ending=(), generic=("two\nlines", "<sample> tag", "x", "x"))
    keys = [k for k, _, _ in phrase_problems(bad, ("*C",), 3)]
    assert keys == ["phrases.generic[0]", "phrases.generic[1]", "phrases.generic[3]", "phrases.ending"]


# --- keep rule --------------------------------------------------------------------------


def test_published_rows_are_filtered_by_verdict_and_banned_patterns():
    # without kept flags: a reflection is kept when its verdict equals the verifier
    rows = RawRows(question=["q"] * 3, completion=["right <answer>1</answer>", "wrong", "right again"],
                   is_correct=[True, False, True],
                   reflections=[["an idea <verdict>Correct</verdict>", "<verdict>Incorrect</verdict>"],
                                ["<verdict>Correct</verdict>", "no verdict at all"],
                                ["<verdict>correct</verdict>"]],
                   extracted_answer=None)
    result = build_traces(rows, TraceOptions(formats=("*C_full",), n_samples=3), PHRASES)
    assert result.stats["input"]["usable_completions"] == 2  # the wrong one has no agreeing verdict
    assert result.stats["formats"]["*C_full"]["skipped_traces"] == {"too_few_usable": 1}
    assert sorted(result.n_samples) == [1, 2]
    banned = build_traces(rows, TraceOptions(formats=("0C",)), PHRASES, banned=compile_banned(["idea"]))
    assert banned.stats["input"]["usable_completions"] == 1
    assert parse_trace(banned.assistant[0]).samples == ["right again"]
    # no extracted-answer column: the completion's last <answer> tag, else empty
    answers = {parse_trace(a).samples[-1]: parse_trace(a).answer for a in result.assistant}
    assert answers.get("right <answer>1</answer>", "1") == "1" and answers.get("right again", "") == ""


# --- accounting -------------------------------------------------------------------------


def accounting_spec():
    return {
        "all_wrong": [("original", False, 1), ("plan_and_execute", False, 1), ("rephrase", False, 1)],
        "all_right": [("original", True, 1), ("plan_and_execute", True, 1), ("rephrase", True, 1)],
        "one_right": [("original", True, 1), ("plan_and_execute", False, 1), ("rephrase", False, 1)],
        "two_usable": [("original", True, 1), ("plan_and_execute", False, 1), ("rephrase", False, 0)],
        "one_variant": [("original", True, 1), ("original", True, 1), ("original", False, 1)],
        "unkept": [("original", True, 0), ("rephrase", False, 0)],
    }


def test_every_skip_is_counted_by_reason():
    rows = raw(accounting_spec())
    formats = ("0C", "*C", "*C_full", "*C*IC", "*CC")
    result = build_traces(rows, TraceOptions(formats=formats, n_samples=3), PHRASES)
    f = result.stats["formats"]
    inp = result.stats["input"]
    assert inp["questions"] == 6 and inp["completions_without_kept_reflection"] == 3
    assert inp["usable_completions"] == 14 and inp["questions_with_usable_correct"] == 4
    assert f["0C"]["skipped_questions"] == {"no_correct": 2} and f["0C"]["questions"] == 4
    assert f["*C"]["skipped_questions"] == {"no_correct": 2, "too_few_usable": 1}
    assert f["*C*IC"]["skipped_questions"] == {"no_correct": 2, "no_incorrect": 1, "too_few_usable": 1}
    assert f["*CC"]["skipped_questions"] == {"no_correct": 2, "too_few_correct": 2}
    # *C_full: two_usable still gets n=1 and n=2; only its n=3 trace is skipped
    assert f["*C_full"]["skipped_questions"] == {"no_correct": 2}
    assert f["*C_full"]["skipped_traces"] == {"no_correct": 6, "too_few_usable": 1}
    assert f["*C_full"]["rows_by_n"] == {"1": 4, "2": 4, "3": 3}
    for fmt in formats:
        assert f[fmt]["questions"] + sum(f[fmt]["skipped_questions"].values()) == 6
        assert f[fmt]["rows"] == Counter(result.format)[fmt]
    strict = build_traces(rows, TraceOptions(formats=("*C_full",), n_samples=3, partial_full=False), PHRASES)
    sf = strict.stats["formats"]["*C_full"]
    assert sf["skipped_questions"] == {"no_correct": 2, "too_few_usable": 1}
    assert sf["skipped_traces"] == {"no_correct": 6, "too_few_usable": 3} and sf["rows"] == 9


def test_distinct_variants_skips_are_counted():
    rows = raw(accounting_spec())
    result = build_traces(rows, TraceOptions(formats=("*C", "*CC"), n_samples=2, distinct_variants=True), PHRASES)
    f = result.stats["formats"]
    assert f["*C"]["skipped_questions"] == {"no_correct": 2, "too_few_variants": 1}
    # all_right: two correct samples from different variants; one_variant has both in one variant
    assert f["*CC"]["skipped_questions"] == {"no_correct": 2, "too_few_correct": 2, "too_few_variants": 1}
    assert f["*CC"]["questions"] == 1


def test_a_format_that_yields_nothing_is_an_error_with_counts():
    rows = raw({"a": [("original", True, 1), ("rephrase", True, 1)], "b": [("original", False, 1)]})
    with pytest.raises(EmptyTracesError) as err:
        build_traces(rows, TraceOptions(formats=("*C_full", "*C*IC"), n_samples=2), PHRASES)
    msg = str(err.value)
    assert "format *C*IC yields no trace from 2 question(s) (skipped: no_correct=1, no_incorrect=1)" in msg
    assert "*C_full" not in msg
    with pytest.raises(EmptyTracesError, match="no usable rows"):
        build_traces(raw({}), TraceOptions(), PHRASES)
    with pytest.raises(SkillFactoryError, match="unknown format"):
        build_traces(rows, TraceOptions(formats=("*X",)), PHRASES)


# --- determinism ------------------------------------------------------------------------


def test_same_input_same_rows_and_seed_matters():
    rows = raw(rich())
    opts = TraceOptions(formats=("*C_full", "*C*IC"), n_samples=4)
    a, b = build_traces(rows, opts, PHRASES), build_traces(rows, opts, PHRASES)
    assert a.records() == b.records() and a.stats == b.stats
    c = build_traces(rows, dataclasses.replace(opts, seed=1), PHRASES)
    assert a.assistant != c.assistant


def shuffled(rows: RawRows, seed: int) -> RawRows:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return RawRows(**{f.name: None if getattr(rows, f.name) is None else [getattr(rows, f.name)[i] for i in order]
                      for f in dataclasses.fields(RawRows)})


@pytest.mark.parametrize("ids", [True, False])
def test_output_does_not_depend_on_input_order(ids):
    rows = raw(rich(), question_ids=ids)
    opts = TraceOptions(formats=("*C_full", "*CC", "random"), n_samples=4, subsample=50, seed=7)
    base = build_traces(rows, opts, PHRASES)
    for seed in range(3):
        assert build_traces(shuffled(rows, seed), opts, PHRASES).records() == base.records()


def test_a_question_s_traces_do_not_depend_on_other_questions_or_formats():
    spec = rich(10)
    full = build_traces(raw(spec), TraceOptions(formats=("0C", "*C_full"), n_samples=3), PHRASES)
    half = build_traces(raw({k: v for k, v in list(spec.items())[:5]}),
                        TraceOptions(formats=("*C_full",), n_samples=3), PHRASES)
    key = lambda r: (r["question_id"], r["format"], r["n_samples"], r["conversations"][1]["content"])
    full_rows = {key(r) for r in full.records()}
    assert {key(r) for r in half.records()} <= full_rows  # same traces from a shard of the questions


def test_subsample_keeps_whole_rows_of_the_shuffled_order():
    rows = raw(rich())
    opts = TraceOptions(formats=("*C_full",), n_samples=3)
    full = build_traces(rows, opts, PHRASES)
    part = build_traces(rows, dataclasses.replace(opts, subsample=7), PHRASES)
    assert len(part) == 7 and part.records() == full.records()[:7]
    assert part.stats["formats"]["*C_full"]["rows_written"] == 7 and part.stats["rows_built"] == len(full)
    assert part.table().num_rows == 7


# --- property: no input crashes the builder -----------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
reflection = st.one_of(text, st.sampled_from([OK, BAD, "<VERDICT> incorrect </verdict>", "<verdict>maybe</verdict>"]),
                       st.none())


@st.composite
def raw_rows(draw):
    n = draw(st.integers(0, 25))
    questions = draw(st.lists(st.sampled_from(["q1", "q2", "q3", None]), min_size=n, max_size=n))
    ids = draw(st.booleans())
    flags = draw(st.booleans())
    reflections = draw(st.lists(st.lists(reflection, max_size=4) | st.none(), min_size=n, max_size=n))
    return RawRows(
        question=questions,
        completion=draw(st.lists(text | st.none(), min_size=n, max_size=n)),
        is_correct=draw(st.lists(st.booleans() | st.none(), min_size=n, max_size=n)),
        reflections=reflections,
        extracted_answer=draw(st.none() | st.lists(text | st.none(), min_size=n, max_size=n)),
        prompt_variant=draw(st.none() | st.lists(st.sampled_from(VARIANTS[:3]) | st.none(), min_size=n, max_size=n)),
        kept=[[draw(st.booleans()) for _ in (r or [])] for r in reflections] if flags else None,
        question_id=[None if q is None else f"id-{q}" for q in questions] if ids else None,
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=raw_rows(), formats=st.lists(st.sampled_from(FORMATS), min_size=1, max_size=3, unique=True),
       n=st.integers(2, 4), distinct=st.booleans(), random_n=st.booleans(), repeats=st.integers(1, 2),
       partial=st.booleans(), subsample=st.none() | st.integers(1, 5))
def test_no_raw_dataset_crashes_the_builder(rows, formats, n, distinct, random_n, repeats, partial, subsample):
    opts = TraceOptions(formats=tuple(formats), n_samples=n, distinct_variants=distinct, random_n=random_n,
                        repeats=repeats, partial_full=partial, subsample=subsample)
    try:
        result = build_traces(rows, opts, PHRASES)
    except EmptyTracesError:
        return
    stats = result.stats
    questions = stats["input"]["questions"]
    for fmt in formats:
        f = stats["formats"][fmt]
        assert f["questions"] + sum(f["skipped_questions"].values()) == questions
        assert set(f["skipped_questions"]) <= set(REASONS) and f["rows"] > 0
    assert len(result) == min(stats["rows_built"], subsample or stats["rows_built"])
    texts = [*rows.completion, *(rows.extracted_answer or []), *(r for rs in rows.reflections for r in rs or [])]
    parseable = not any(tag in t for t in texts if isinstance(t, str) for tag in LAYOUT_TAGS)
    for rec in result.records():
        if parseable:
            parsed = parse_trace(rec["conversations"][1]["content"])
            assert len(parsed.samples) == rec["n_samples"] and len(parsed.glues) == rec["n_samples"] - 1
    assert result.table().num_rows == len(result)
