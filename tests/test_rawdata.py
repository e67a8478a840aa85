"""The raw-dataset schema: column resolution, type checks, loading sources, shards."""
from __future__ import annotations

import json
import time

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skill_factory import rawdata as rd
from skill_factory.errors import SkillFactoryError
from skill_factory.rawdata import RawColumns, canonical_table, load_raw_dataset

REQUIRED = ("question", "completion", "is_correct")
OPTIONAL = ("answer", "prompt_variant", "extracted_answer", "reflections")


def paper_rows():
    """Rows shaped like the paper's released raw data (alternative names, list columns)."""
    return [
        {"question": "Use [1, 2] to make 3.", "answer": 3, "prompt_type": "original",
         "model_responses__mutated_prompts": ["<answer>1 + 2</answer>"],
         rd.IS_CORRECT: [True], rd.EXTRACTED: ["1 + 2"],
         rd.REFLECTIONS: ["1 + 2 = 3 <verdict>Correct</verdict>", "<verdict>Incorrect</verdict>"],
         "extra": 7},
        {"question": "Use [4, 5] to make 9.", "answer": 9, "prompt_type": "rephrase",
         "model_responses__mutated_prompts": ["<answer>4 * 5</answer>"],
         rd.IS_CORRECT: [False], rd.EXTRACTED: [None],
         rd.REFLECTIONS: ["nope <verdict>incorrect</verdict>"], "extra": 8},
    ]


def test_alternative_names_are_found_and_made_canonical():
    table = canonical_table(pa.Table.from_pylist(paper_rows()), RawColumns(), REQUIRED, OPTIONAL)
    assert table.column(rd.COMPLETION).to_pylist() == ["<answer>1 + 2</answer>", "<answer>4 * 5</answer>"]
    assert table.column(rd.PROMPT_VARIANT).to_pylist() == ["original", "rephrase"]
    assert table.column(rd.IS_CORRECT).to_pylist() == [[True], [False]]
    assert table.column(rd.EXTRACTED).to_pylist() == [["1 + 2"], [None]]
    assert table.column(rd.ANSWER).to_pylist() == ["3", "9"]
    assert table.schema.field(rd.COMPLETION).type == pa.string()
    assert table.column("extra").to_pylist() == [7, 8]  # other columns pass through
    assert "prompt_type" not in table.column_names


def test_canonical_shapes_pass_unchanged_and_bare_bools_are_wrapped():
    rows = [{"question": "q", rd.COMPLETION: "c", rd.IS_CORRECT: True, rd.PROMPT_VARIANT: "v"}]
    table = canonical_table(pa.Table.from_pylist(rows), RawColumns(), REQUIRED, OPTIONAL)
    assert table.to_pylist() == [{"question": "q", rd.COMPLETION: "c", rd.IS_CORRECT: [True],
                                  rd.PROMPT_VARIANT: "v"}]


def test_explicit_mapping_wins_over_auto_detection():
    rows = [{"prompt": "q", "gen": "c", "ok": [True], "question": "other"}]
    cols = RawColumns(question="prompt", completion="gen", is_correct="ok")
    table = canonical_table(pa.Table.from_pylist(rows), cols, REQUIRED)
    assert table.to_pylist() == [{"question": "q", rd.COMPLETION: "c", rd.IS_CORRECT: [True]}]


def test_missing_and_mistyped_columns_are_named_in_one_error():
    rows = [{"question": 5, "gen": "c", rd.IS_CORRECT: ["yes"]}]
    with pytest.raises(SkillFactoryError) as err:
        canonical_table(pa.Table.from_pylist(rows), RawColumns(), REQUIRED, key="reflect.columns",
                        source="my.parquet")
    msg = str(err.value)
    assert "3 column problem(s) in my.parquet" in msg
    assert "reflect.columns.question: column 'question' has type int64, expected a string" in msg
    assert ("reflect.columns.completion: no column 'model_responses__example_annotation' or "
            "'model_responses__mutated_prompts'") in msg
    assert f"reflect.columns.is_correct: column '{rd.IS_CORRECT}' has type list<item: string>" in msg
    assert "its columns: question, gen" in msg


def test_an_explicitly_named_column_must_exist():
    rows = [{"question": "q", rd.COMPLETION: "c", rd.IS_CORRECT: [True]}]
    with pytest.raises(SkillFactoryError, match="reflect.columns.completion: column 'typo' not found"):
        canonical_table(pa.Table.from_pylist(rows), RawColumns(completion="typo"), REQUIRED,
                        key="reflect.columns")


def test_list_columns_must_hold_exactly_one_value():
    rows = [{"question": "q", rd.COMPLETION: ["a", "b"], rd.IS_CORRECT: [True]}]
    with pytest.raises(SkillFactoryError, match="completion: row 0 of column .* holds 2 values, expected exactly 1"):
        canonical_table(pa.Table.from_pylist(rows), RawColumns(), REQUIRED)
    rows = [{"question": "q", rd.COMPLETION: "a", rd.IS_CORRECT: None}]
    with pytest.raises(SkillFactoryError, match="is_correct: row 0 .* is null"):
        canonical_table(pa.Table.from_pylist(rows, schema=pa.schema(
            [("question", pa.string()), (rd.COMPLETION, pa.string()), (rd.IS_CORRECT, pa.bool_())])),
            RawColumns(), REQUIRED)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "json", "hub_folder", "save_to_disk", "dict_on_disk"])
def test_local_sources_load(tmp_path, fmt):
    rows = paper_rows()
    table = pa.Table.from_pylist(rows)
    if fmt == "parquet":
        src = tmp_path / "raw.parquet"
        pq.write_table(table, src)
    elif fmt == "jsonl":
        src = tmp_path / "raw.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        src = tmp_path / "raw.json"
        src.write_text(json.dumps(rows))
    elif fmt == "hub_folder":  # the layout of a dataset repo downloaded from the hub
        src = tmp_path / "repo"
        (src / "data").mkdir(parents=True)
        pq.write_table(table, src / "data" / "train-00000-of-00001.parquet")
        pq.write_table(table.slice(0, 1), src / "data" / "test-00000-of-00001.parquet")
        (src / "README.md").write_text("card")
    elif fmt == "save_to_disk":
        src = tmp_path / "saved"
        datasets.Dataset(table).save_to_disk(str(src))
    else:
        src = tmp_path / "saved_dict"
        datasets.DatasetDict({"train": datasets.Dataset(table), "test": datasets.Dataset(table.slice(0, 1))}).save_to_disk(str(src))
    ds = load_raw_dataset(str(src), split="train")
    assert ds.num_rows == 2
    out = canonical_table(rd.arrow_table(ds), RawColumns(), REQUIRED, OPTIONAL)
    assert out.column(rd.COMPLETION).to_pylist()[1] == "<answer>4 * 5</answer>"
    if fmt in ("hub_folder", "dict_on_disk"):
        assert load_raw_dataset(str(src), split="test").num_rows == 1
    if fmt == "hub_folder":
        (src / "data" / "validation-00000-of-00001.parquet").write_bytes(
            (src / "data" / "test-00000-of-00001.parquet").read_bytes())
        assert load_raw_dataset(str(src), split="val").num_rows == 1


def test_missing_local_path_and_unreachable_hub_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(SkillFactoryError, match="reflect.input_dataset: no such file or folder"):
        load_raw_dataset(str(tmp_path / "nope.parquet"), key="reflect.input_dataset")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(rd, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(SkillFactoryError, match=r"'SkillFactory/RAW_DATA-x' is not a local path.*cannot be "
                                                r"reached.*set reflect.input_dataset=DIR"):
        load_raw_dataset("SkillFactory/RAW_DATA-x", key="reflect.input_dataset")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("source,local", [
    ("SkillFactory/RAW_DATA-countdown3args-Qwen2.5-1.5B-Instruct", False), ("gsm8k", False),
    ("./data", True), ("/abs/path", True), ("data/raw.parquet", True), ("~/x", True),
    ("file.jsonl", True), ("a/b/c", True)])
def test_local_or_hub(source, local):
    assert rd.is_local_source(source) is local


def test_source_identity_follows_file_contents(tmp_path):
    src = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"a": [1]}), src)
    first = rd.source_identity(str(src))
    assert rd.source_identity(str(src)) == first
    time.sleep(0.01)
    pq.write_table(pa.table({"a": [1, 2]}), src)
    assert rd.source_identity(str(src)) != first
    assert rd.source_identity("org/name", revision="v1") == {"hub": "org/name", "split": "train", "revision": "v1"}
    assert rd.source_identity(None) is None


def test_shards_are_atomic_ordered_and_stale_files_go(tmp_path):
    shards = rd.Shards(tmp_path, total=3)
    shards.write(1, pa.table({"x": [1]}), {"n": 1})
    assert [shards.done(i) for i in range(3)] == [False, True, False]
    assert shards.path(1).name == "train-00001-of-00003.parquet"
    # a shard of another layout (another shard size) and a leftover in-flight file
    pq.write_table(pa.table({"x": [9]}), tmp_path / "data" / "train-00000-of-00005.parquet")
    (tmp_path / "tmp" / "train-00002-of-00003.parquet").write_bytes(b"partial")
    assert shards.remove_stale() == 1
    assert not list((tmp_path / "tmp").iterdir())
    shards.write(0, pa.table({"x": [0]}), {"n": 1})
    shards.write(2, pa.table({"x": [2]}), {"n": 1})
    assert shards.read().column("x").to_pylist() == [0, 1, 2]
    assert shards.stats(2) == {"n": 1}
    shards.finish()
    assert not (tmp_path / "tmp").exists()
    # the layout is the hub's: plain `datasets` reads it
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds["x"] == [0, 1, 2]
