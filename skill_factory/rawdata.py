"""The raw dataset of sampled completions and reflections: schema, loading, sharded writing.

Why one module: the sample stage writes this dataset, the reflect stage reads and extends
it, the traces stage reads it, and all of them must also take a *published* raw dataset
(e.g. the paper's ``SkillFactory/RAW_DATA-countdown3args-Qwen2.5-1.5B-Instruct``) in its
place. So the column names of method.md §3, their alternative spellings, the user's column
mapping and the type checks live here once.

Schema (one row per question x prompt variant x completion; canonical names first):

==============================================================  =========================
``question``                                                    str, the user prompt
``answer``                                                      str, gold answer as text
``prompt_variant`` (or ``prompt_type``)                         str
``model_responses__example_annotation``                         str (or a 1-element list)
  (or ``model_responses__mutated_prompts``)
``model_responses__example_annotation__eval_is_correct``        list[bool], 1 element
``model_responses__example_annotation__eval_extracted_answers`` list[str|null], 1 element
``model_responses__mutated_prompts_reflection``                 list[str], K reflections
==============================================================  =========================

Reading: ``load_raw_dataset(source)`` takes a local parquet / jsonl / json file, a folder of
them (hub layout such as ``data/train-00000-of-00001.parquet``), a ``save_to_disk`` folder,
one of our stage artifacts, or a hub id (needs the network, or the dataset in the local
Hugging Face cache with ``HF_HUB_OFFLINE=1``). ``canonical_table(table, RawColumns(...),
required=...)`` then finds each role's column (the mapping, else the canonical name, else the
alternative), checks its type, and returns a table with canonical names and types; every
missing or mistyped column is named in one ``SkillFactoryError``.

Writing: a stage artifact holds its dataset as parquet shards in Hugging Face hub layout, so
``datasets.load_dataset("parquet", data_files=f"{artifact}/data/*.parquet")`` (or
``load_artifact(artifact)``) reads it::

    <artifact>/
      manifest.json                         written last by the stage runner
      data/train-00000-of-00008.parquet     one per shard, renamed into place when complete
      stats/train-00000-of-00008.json       per-shard generation stats (tokens, seconds)
      tmp/                                  in-flight writes (removed when the stage ends)

    from skill_factory.rawdata import RawColumns, load_raw_dataset, canonical_table
    ds = load_raw_dataset("SkillFactory/RAW_DATA-countdown3args-Qwen2.5-1.5B-Instruct")
    table = canonical_table(arrow_table(ds), RawColumns(), required=("question", "completion"))
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence
from urllib.parse import urlparse

from skill_factory.errors import SkillFactoryError

log = logging.getLogger(__name__)

# --- column names ---------------------------------------------------------------------

QUESTION = "question"
ANSWER = "answer"
PROMPT_VARIANT = "prompt_variant"
COMPLETION = "model_responses__example_annotation"
IS_CORRECT = "model_responses__example_annotation__eval_is_correct"
EXTRACTED = "model_responses__example_annotation__eval_extracted_answers"
REFLECTIONS = "model_responses__mutated_prompts_reflection"
# written by the reflect stage next to REFLECTIONS, one entry per reflection
REFLECTION_VERDICTS = "reflection_verdicts"  # True / False / null (no verdict)
REFLECTION_BANNED = "reflection_banned"  # matched a banned pattern
REFLECTION_KEPT = "reflection_kept"  # verdict agrees with the verifier and not banned
NUM_KEPT = "num_kept_reflections"

# role -> (canonical name, accepted alternatives), in auto-detection order
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "question": (QUESTION, ()),
    "answer": (ANSWER, ()),
    "prompt_variant": (PROMPT_VARIANT, ("prompt_type",)),
    "completion": (COMPLETION, ("model_responses__mutated_prompts",)),
    "is_correct": (IS_CORRECT, ()),
    "extracted_answer": (EXTRACTED, ()),
    "reflections": (REFLECTIONS, ()),
}

_EXPECTED = {
    "question": "a string",
    "answer": "a string or a number",
    "prompt_variant": "a string",
    "completion": "a string or a 1-element list of strings",
    "is_correct": "a bool or a 1-element list of bools",
    "extracted_answer": "a string or a 1-element list of strings",
    "reflections": "a list of strings",
}


@dataclass
class RawColumns:
    """Column names of a raw dataset, by role; null = auto-detect.

    Auto-detection takes the canonical name of method.md §3, else its alternative spelling
    (``prompt_type`` for the variant, ``model_responses__mutated_prompts`` for the
    completion). Shared by every stage that reads a raw dataset (reflect, traces).
    """

    question: Optional[str] = None
    answer: Optional[str] = None
    prompt_variant: Optional[str] = None
    completion: Optional[str] = None
    is_correct: Optional[str] = None
    extracted_answer: Optional[str] = None
    reflections: Optional[str] = None


assert [f.name for f in fields(RawColumns)] == list(ROLES)


# --- loading --------------------------------------------------------------------------

_DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".arrow")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SPLIT_NAMES = ("train", "validation", "valid", "val", "dev", "test", "eval")
_SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "test"}


def is_local_source(source: str) -> bool:
    """Whether ``source`` names a local file or folder (as opposed to a hub id)."""
    path = Path(source).expanduser()
    return (path.exists() or source.startswith(("/", "./", "../", "~", "."))
            or source.endswith(_DATA_SUFFIXES) or not _HUB_ID.match(source))


def source_identity(source: Optional[str], split: str = "train", revision: Optional[str] = None):
    """What identifies the data behind ``source``, for artifact fingerprints.

    A local source: its absolute path plus the size and modification time of each data file
    (cheap, and changes when the file is rewritten); a hub id: the id and revision.
    """
    if source is None:
        return None
    if not is_local_source(source):
        return {"hub": source, "split": split, "revision": revision}
    path = Path(source).expanduser().absolute()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    entries = []
    for p in files:
        st = p.stat()
        entries.append([str(p.relative_to(path)) if p != path else p.name, st.st_size, st.st_mtime_ns])
    return {"path": str(path), "split": split, "files": entries}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub endpoint accepts a TCP connection (fast offline check)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_raw_dataset(source: str, split: str = "train", revision: Optional[str] = None,
                     key: str = "input_dataset"):
    """A ``datasets.Dataset`` from a local file/folder or a hub id; ``key`` names the setting."""
    import datasets

    if is_local_source(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise SkillFactoryError(f"{key}: no such file or folder: {source}")
        return datasets.Dataset(_read_local(path, split, key))
    if not _hub_offline_mode() and not hub_reachable():
        raise SkillFactoryError(
            f"{key}: '{source}' is not a local path, and the Hugging Face Hub cannot be reached "
            f"(offline?). Download it where there is network, e.g. `huggingface-cli download "
            f"--repo-type dataset {source} --local-dir DIR`, and set {key}=DIR")
    try:
        ds = datasets.load_dataset(source, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot load"
        raise SkillFactoryError(f"{key}: cannot load hub dataset '{source}' (split '{split}'): "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return ds


def _read_local(path: Path, split: str, key: str):
    import datasets
    import pyarrow as pa

    if path.is_file():
        return _read_file(path, key)
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise SkillFactoryError(f"{key}: {path} has no split '{split}'; splits: {', '.join(loaded)}")
            loaded = loaded[split]
        return arrow_table(loaded)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _DATA_SUFFIXES
                   and "tmp" not in p.relative_to(path).parts and p.name != "manifest.json"
                   and not p.name.startswith("."))
    if (path / "manifest.json").exists() and (path / "data").is_dir():  # one of our artifacts
        files = sorted((path / "data").glob("*.parquet"))
    by_split = [p for p in files if _split_of(p.relative_to(path)) == _canonical_split(split)]
    if any(_split_of(p.relative_to(path)) for p in files):
        files = by_split
    if not files:
        raise SkillFactoryError(f"{key}: no data files (parquet, jsonl, json) for split '{split}' in {path}")
    tables = [_read_file(p, key) for p in files]
    try:
        return pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SkillFactoryError(f"{key}: the data files in {path} do not share one schema ({exc})") from exc


def _canonical_split(name: str) -> str:
    return _SPLIT_ALIASES.get(name.lower(), name.lower())


def _split_of(rel: Path) -> Optional[str]:
    """The split a data file belongs to by hub naming (``train-0000…``, ``test/``), if any."""
    for part in rel.parts:
        stem = part.split(".")[0].lower()
        for name in _SPLIT_NAMES:
            if stem == name or stem.startswith((name + "-", name + "_")):
                return _canonical_split(name)
    return None


def _read_file(path: Path, key: str):
    import pyarrow as pa

    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if path.suffix == ".jsonl":
            import pyarrow.json as pj

            return pj.read_json(path)
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):  # {"data": [...]} or column-oriented
                data = data.get("data", data)
            return pa.Table.from_pylist(data) if isinstance(data, list) else pa.table(data)
        if path.suffix == ".arrow":
            import datasets

            return arrow_table(datasets.Dataset.from_file(str(path)))
    except (pa.ArrowInvalid, ValueError, OSError) as exc:
        raise SkillFactoryError(f"{key}: cannot read {path}: {str(exc).splitlines()[0]}") from exc
    raise SkillFactoryError(f"{key}: unsupported file type {path.suffix} ({path}); use parquet, jsonl or json")


def arrow_table(ds) -> Any:
    """The rows of a ``datasets.Dataset`` as one pyarrow Table (selections applied)."""
    return ds.with_format("arrow")[:]


def load_artifact(path: str | os.PathLike):
    """The dataset of a finished stage artifact (its shards in order)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(Path(path, "data").glob("*.parquet"))
    if not files:
        raise SkillFactoryError(f"no dataset shards under {path}/data")
    return datasets.Dataset(pa.concat_tables([pq.read_table(f) for f in files]))


# --- columns: resolve, check, canonicalise -----------------------------------------------


def resolve_columns(schema, columns: RawColumns, required: Iterable[str], optional: Iterable[str] = (),
                    key: str = "columns", source: str = "the dataset") -> dict[str, str]:
    """role -> column name for every required and present optional role; one error for all."""
    import pyarrow as pa

    names = list(schema.names)
    resolved: dict[str, str] = {}
    problems: list[str] = []
    required = tuple(required)
    for role in (*required, *[r for r in optional if r not in required]):
        canonical, alternatives = ROLES[role]
        explicit = getattr(columns, role)
        if explicit is not None:
            if explicit not in names:
                problems.append(f"{key}.{role}: column '{explicit}' not found in {source}")
                continue
            name = explicit
        else:
            name = next((n for n in (canonical, *alternatives) if n in names), None)
            if name is None:
                if role in required:
                    tried = " or ".join(f"'{n}'" for n in (canonical, *alternatives))
                    problems.append(f"{key}.{role}: no column {tried} in {source}; set {key}.{role} "
                                    "to the column that holds it")
                continue
        if not _type_ok(role, schema.field(name).type, pa):
            problems.append(f"{key}.{role}: column '{name}' has type {schema.field(name).type}, "
                            f"expected {_EXPECTED[role]}")
            continue
        resolved[role] = name
    if problems:
        listing = ", ".join(names) if len(names) <= 40 else ", ".join(names[:40]) + ", ..."
        raise SkillFactoryError(f"{len(problems)} column problem(s) in {source}:\n  - "
                                + "\n  - ".join(problems) + f"\n  (its columns: {listing})")
    return resolved


def _is_str(t, pa) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _list_of(t, pa, pred) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and pred(t.value_type, pa)


def _type_ok(role: str, t, pa) -> bool:
    if role in ("question", "prompt_variant"):
        return _is_str(t, pa)
    if role == "answer":
        return _is_str(t, pa) or pa.types.is_integer(t) or pa.types.is_floating(t)
    if role in ("completion", "extracted_answer"):
        return _is_str(t, pa) or _list_of(t, pa, _is_str)
    if role == "is_correct":
        return pa.types.is_boolean(t) or _list_of(t, pa, lambda v, pa: pa.types.is_boolean(v))
    if role == "reflections":
        return _list_of(t, pa, _is_str)
    raise KeyError(role)


def _single(values: list, role: str, name: str, key: str, source: str, allow_none: bool) -> list:
    """Unwrap 1-element lists (the paper's shape); anything else is a user error."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (list, tuple)):
            if len(v) != 1:
                raise SkillFactoryError(f"{key}.{role}: row {i} of column '{name}' in {source} holds "
                                        f"{len(v)} values, expected exactly 1")
            v = v[0]
        if v is None and not allow_none:
            raise SkillFactoryError(f"{key}.{role}: row {i} of column '{name}' in {source} is null")
        out.append(v)
    return out


def canonical_table(table, columns: RawColumns, required: Sequence[str], optional: Sequence[str] = (),
                    key: str = "columns", source: str = "the dataset"):
    """``table`` with each resolved role under its canonical name and type; other columns kept.

    Canonical types: completion ``str``; is_correct ``list<bool>`` and extracted answer
    ``list<str>`` with one element each (the paper's shapes); answer ``str``.
    """
    import pyarrow as pa

    resolved = resolve_columns(table.schema, columns, required, optional, key=key, source=source)
    canonical_names = {ROLES[r][0] for r in resolved}
    # a column that sits under a canonical name but was not chosen for it would clash
    drop = [n for n in table.column_names if n in canonical_names and n not in resolved.values()]
    for n in drop:
        log.warning("%s: dropping column '%s' of %s (another column was mapped to that role)", key, n, source)
    out = table.drop_columns(drop) if drop else table
    for role, name in resolved.items():
        canonical = ROLES[role][0]
        col = out.column(name)
        if role == "completion":
            values = _single(col.to_pylist(), role, name, key, source, allow_none=False)
            new = pa.array(values, pa.string())
        elif role == "is_correct":
            values = _single(col.to_pylist(), role, name, key, source, allow_none=False)
            new = pa.array([[bool(v)] for v in values], pa.list_(pa.bool_()))
        elif role == "extracted_answer":
            values = _single(col.to_pylist(), role, name, key, source, allow_none=True)
            new = pa.array([[v] for v in values], pa.list_(pa.string()))
        elif role == "answer":
            new = pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
        elif role == "reflections":
            new = col.cast(pa.list_(pa.string()))
        else:
            new = col.cast(pa.string())
        idx = out.column_names.index(name)
        out = out.set_column(idx, canonical, new)
    return out


# --- sharded artifact writing ----------------------------------------------------------------


class Shards:
    """The shard files of one stage artifact; a shard exists only once complete.

    A shard's stats file is written before its parquet file, each to ``tmp/`` then renamed
    into place, so a killed run leaves either a complete shard or none.
    """

    def __init__(self, root: str | os.PathLike, total: int, split: str = "train"):
        self.root = Path(root)
        self.total = total
        self.split = split
        self.data_dir = self.root / "data"
        self.stats_dir = self.root / "stats"
        self.tmp_dir = self.root / "tmp"
        for d in (self.data_dir, self.stats_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def _name(self, index: int) -> str:
        return f"{self.split}-{index:05d}-of-{self.total:05d}"

    def path(self, index: int) -> Path:
        return self.data_dir / f"{self._name(index)}.parquet"

    def stats_path(self, index: int) -> Path:
        return self.stats_dir / f"{self._name(index)}.json"

    def done(self, index: int) -> bool:
        return self.path(index).exists() and self.stats_path(index).exists()

    def remove_stale(self) -> int:
        """Delete files that are not shards of this layout (e.g. from another shard size)."""
        keep = {self.path(i) for i in range(self.total)} | {self.stats_path(i) for i in range(self.total)}
        stale = [p for d in (self.data_dir, self.stats_dir) for p in d.iterdir() if p not in keep]
        for p in stale:
            p.unlink()
        for p in self.tmp_dir.iterdir():
            p.unlink()
        if stale:
            log.warning("removed %d shard file(s) of an earlier layout from %s", len(stale), self.root)
        return len(stale)

    def write(self, index: int, table, stats: dict) -> Path:
        import pyarrow.parquet as pq

        name = self._name(index)
        tmp_stats = self.tmp_dir / f"{name}.json"
        tmp_stats.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        os.replace(tmp_stats, self.stats_path(index))
        tmp = self.tmp_dir / f"{name}.parquet"
        pq.write_table(table, tmp)
        os.replace(tmp, self.path(index))
        return self.path(index)

    def stats(self, index: int) -> dict:
        return json.loads(self.stats_path(index).read_text())

    def read(self, columns: Optional[Sequence[str]] = None):
        """All shards, in order, as one pyarrow Table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(self.path(i), columns=columns) for i in range(self.total)])

    def finish(self) -> None:
        for p in self.tmp_dir.iterdir():
            p.unlink()
        self.tmp_dir.rmdir()
