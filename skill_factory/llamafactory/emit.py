"""What LLaMA-Factory reads: SFT rows, their ``dataset_info.json`` entry, the training yaml.

Why normalise the data: ShareGPT data comes in two spellings (``role``/``content`` with
``user``/``assistant``, or the original ``from``/``value`` with ``human``/``gpt``), under a
``conversations`` or ``messages`` column, and LLaMA-Factory silently *skips* a row whose
turns do not alternate (it logs a warning and trains on the rest). So every source, the
traces artifact included, is read once, each row checked (optional leading system turn,
then user/assistant pairs, ending with a non-empty assistant turn), and written as one
parquet file with a single ``conversations`` column in the role/content/user/assistant/
system layout. A broken row is an error naming the row, before anything is launched, and
the dataset entry is the same five tags for every source.

Why a yaml with sections and comments: it is the file a reviewer reads (and the golden file
keeps under review); comments are ignored by the parser.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from skill_factory.errors import SkillFactoryError

log = logging.getLogger(__name__)

DATASET_NAME = "skillfactory_sft"
DATASET_INFO = "dataset_info.json"
DATA_FILE = "data/train.parquet"
TRAIN_YAML = "train.yaml"

MESSAGE_COLUMNS = ("conversations", "messages")
KEY_PAIRS = (("role", "content"), ("from", "value"))
USER_TAGS = ("user", "human")
ASSISTANT_TAGS = ("assistant", "gpt")
SYSTEM_TAGS = ("system",)
# the layout every normalised file has, and so every entry we write
TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
        "assistant_tag": "assistant", "system_tag": "system"}


class SettingError(SkillFactoryError):
    """A problem with one setting: its dotted key, what is wrong, and the fix."""

    def __init__(self, key: str, what: str, fix: str):
        self.key, self.what, self.fix = key, what, fix
        super().__init__(f"{key}: {what} (fix: {fix})")


@dataclass(frozen=True)
class Layout:
    """Where a ShareGPT table keeps its conversations (column, keys, role names)."""

    messages: str
    role_tag: str
    content_tag: str
    user_tag: str
    assistant_tag: str
    system_tag: str

    def entry_fields(self) -> dict:
        return {"columns": {"messages": self.messages},
                "tags": {"role_tag": self.role_tag, "content_tag": self.content_tag,
                         "user_tag": self.user_tag, "assistant_tag": self.assistant_tag,
                         "system_tag": self.system_tag}}


# --- the data --------------------------------------------------------------------------

def _list_struct(type_) -> Optional[Any]:
    import pyarrow as pa

    if (pa.types.is_list(type_) or pa.types.is_large_list(type_)) and pa.types.is_struct(type_.value_type):
        return type_.value_type
    return None


def detect_layout(table, columns, key: str = "sft.dataset") -> Layout:
    """The layout of ``table`` given the user's ``ShareGPTColumns`` (null fields detected)."""
    import pyarrow.compute as pc

    names = table.column_names
    messages = columns.messages or next((c for c in MESSAGE_COLUMNS if c in names), None)
    if messages is None or messages not in names:
        wanted = columns.messages or " or ".join(MESSAGE_COLUMNS)
        raise SettingError(key, f"no conversations column {wanted}; columns: {', '.join(names)}",
                           "set sft.columns.messages to the column holding the messages")
    struct = _list_struct(table.schema.field(messages).type)
    if struct is None:
        raise SettingError(key, f"column '{messages}' is {table.schema.field(messages).type}, not a list of "
                           "messages such as [{role, content}, ...]", "point sft.dataset at ShareGPT data")
    fields = [struct.field(i).name for i in range(struct.num_fields)]

    def pick(given: Optional[str], options: Iterable[str], what: str, setting: str) -> str:
        found = given or next((o for o in options if o in fields), None)
        if found is None or found not in fields:
            raise SettingError(key, f"the messages in '{messages}' have no {what} key "
                               f"({given or ' or '.join(options)}); keys: {', '.join(fields)}",
                               f"set sft.columns.{setting}")
        return found

    role_tag = pick(columns.role_tag, (k for k, _ in KEY_PAIRS), "role", "role_tag")
    content_tag = pick(columns.content_tag, (v for _, v in KEY_PAIRS), "content", "content_tag")
    flat = pc.list_flatten(table[messages])
    roles = set(pc.unique(pc.struct_field(flat, role_tag)).to_pylist()) - {None}

    def tag(given: Optional[str], options: tuple[str, ...]) -> str:
        return given or next((o for o in options if o in roles), options[0])

    return Layout(messages, role_tag, content_tag, tag(columns.user_tag, USER_TAGS),
                  tag(columns.assistant_tag, ASSISTANT_TAGS), tag(columns.system_tag, SYSTEM_TAGS))


def _row_problem(roles: list, contents: list, layout: Layout) -> Optional[str]:
    """Why one conversation cannot be trained on by LLaMA-Factory (None = it can)."""
    if roles and roles[0] == layout.system_tag:
        roles, contents = roles[1:], contents[1:]
    if len(roles) < 2:
        return "has no user/assistant pair"
    for i, role in enumerate(roles):
        want = layout.user_tag if i % 2 == 0 else layout.assistant_tag
        if role != want:
            return f"turn {i + 1} has role {role!r} where {want!r} belongs"
    if len(roles) % 2:
        return "ends with a user turn"
    if any(c is None for c in contents):
        return "has a message without content"
    if any(not c.strip() for c in contents[1::2]):
        return "has an empty assistant turn"
    return None


def normalise(table, layout: Layout, key: str = "sft.dataset") -> tuple[Any, dict]:
    """``table`` as a one-column ``conversations`` table in our layout, plus row statistics.

    Every row is checked; any broken row is an error that names up to five of them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table[layout.messages].combine_chunks()
    if isinstance(col, pa.ChunkedArray):  # an empty table
        col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)
    n = len(col)
    if n == 0:
        raise SettingError(key, "the dataset has no rows", "point it at data with conversations")
    offsets = col.offsets.to_pylist()
    values = col.values
    roles = values.field(layout.role_tag).to_pylist()
    contents = values.field(layout.content_tag).cast(pa.string())
    content_list = contents.to_pylist()
    nulls = col.is_null().to_pylist()
    mapping = {layout.user_tag: "user", layout.assistant_tag: "assistant", layout.system_tag: "system"}
    bad: list[tuple[int, str]] = []
    assistant_chars = []
    for i in range(n):
        if nulls[i]:
            bad.append((i, "is null"))
            continue
        lo, hi = offsets[i], offsets[i + 1]
        problem = _row_problem(roles[lo:hi], content_list[lo:hi], layout)
        if problem:
            bad.append((i, problem))
        else:
            assistant_chars.append(sum(len(c) for c, r in zip(content_list[lo:hi], roles[lo:hi])
                                       if r == layout.assistant_tag))
    if bad:
        examples = "; ".join(f"row {i} {why}" for i, why in bad[:5])
        raise SettingError(
            key, f"{len(bad)} of {n} conversations are not what LLaMA-Factory trains on (an optional "
            f"system turn, then {layout.user_tag}/{layout.assistant_tag} pairs ending with a non-empty "
            f"{layout.assistant_tag} turn), e.g. {examples}",
            "clean those rows, or map the column and role names with sft.columns.*")
    mapped = pa.array([mapping.get(r, r) for r in roles], pa.string())
    struct = pa.StructArray.from_arrays([mapped, contents], names=["role", "content"])
    start = offsets[0]
    if start:  # a sliced column: rebase the offsets onto the values they use
        struct = struct.slice(start, offsets[-1] - start)
    rebased = pa.array([o - start for o in offsets], pa.int64())
    conversations = pa.LargeListArray.from_arrays(rebased, struct).cast(pa.list_(struct.type))
    out = pa.table({"conversations": conversations})
    stats = {"rows": n, "messages": offsets[-1] - offsets[0],
             "assistant_chars_mean": round(sum(assistant_chars) / n, 1),
             "assistant_chars_max": max(assistant_chars)}
    if "format" in table.column_names:
        counts = pc.value_counts(table["format"].combine_chunks()).to_pylist()
        stats["rows_by_format"] = {str(c["values"]): c["counts"] for c in counts}
    return out, stats


def write_parquet(table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (a crash never leaves half a file)."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


# --- dataset_info.json -----------------------------------------------------------------

def file_entry(file_name: str) -> dict:
    """A ``dataset_info.json`` entry for one normalised local file."""
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {"messages": "conversations"}, "tags": dict(TAGS)}


def hub_entry(hub_id: str, split: str, layout: Layout) -> dict:
    """An entry LLaMA-Factory loads from the hub itself (used only when we cannot read it)."""
    return {"hf_hub_url": hub_id, "split": split, "formatting": "sharegpt", **layout.entry_fields()}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def merge_dataset_info(source: str | os.PathLike, target: str | os.PathLike,
                       name: Optional[str] = None) -> tuple[str, str]:
    """Add our dataset entry to a LLaMA-Factory ``dataset_info.json``, keeping every other entry.

    ``source`` is an sft artifact directory (or its ``dataset_info.json``); ``target`` is the
    user's file (created when missing). A relative ``file_name`` becomes absolute, so the
    entry works from the user's checkout. Returns (entry name, "added" | "unchanged"); an
    existing *different* entry of that name is an error, never overwritten.
    """
    src = Path(source)
    if src.is_dir():
        src = src / DATASET_INFO
    if not src.is_file():
        raise SkillFactoryError(f"merge-dataset-info: {src} not found (give an sft artifact directory "
                                f"or its {DATASET_INFO})")
    ours = json.loads(src.read_text())
    if len(ours) != 1:
        raise SkillFactoryError(f"merge-dataset-info: {src} holds {len(ours)} entries; expected one")
    (our_name, entry), = ours.items()
    entry = dict(entry)
    if "file_name" in entry and not Path(entry["file_name"]).is_absolute():
        entry["file_name"] = str((src.parent / entry["file_name"]).resolve())
    name = name or our_name
    dst = Path(target)
    try:
        theirs = json.loads(dst.read_text()) if dst.exists() else {}
    except json.JSONDecodeError as exc:
        raise SkillFactoryError(f"merge-dataset-info: {dst} is not valid JSON ({exc})") from exc
    if not isinstance(theirs, dict):
        raise SkillFactoryError(f"merge-dataset-info: {dst} is not a JSON object of dataset entries")
    if name in theirs:
        if theirs[name] == entry:
            return name, "unchanged"
        raise SkillFactoryError(f"merge-dataset-info: {dst} already has a different entry '{name}'; nothing "
                                "was changed (fix: pass --name to add ours under another name)")
    theirs[name] = entry
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_json(dst, theirs)
    return name, "added"


# --- the training yaml -----------------------------------------------------------------

def render_yaml(sections: list[tuple[str, dict]], header: str = "") -> str:
    """``sections`` as yaml with one ``### title`` comment per section (keys in order)."""
    import yaml

    parts = [header.rstrip("\n") + "\n"] if header else []
    for title, values in sections:
        if not values:
            continue
        parts.append(f"### {title}\n" + yaml.safe_dump(values, sort_keys=False, default_flow_style=False,
                                                      allow_unicode=True, width=1000))
    return "\n".join(parts)


def flat_args(sections: list[tuple[str, dict]]) -> dict:
    out: dict = {}
    for _, values in sections:
        out.update(values)
    return out
