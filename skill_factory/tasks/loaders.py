"""Load question records for file-backed tasks (GSM8K, CommonsenseQA).

Usage::

    from skill_factory.tasks.loaders import load_records
    rows = load_records(path="data/gsm8k_test.jsonl", hub_id=None, what="task.gsm8k")

Offline first: a local file (``.jsonl``, ``.json``, ``.parquet``, ``.csv``) is used when a
path is given; the hub is contacted only when the config names a hub id and no path. Every
failure a user can cause (missing file, bad JSON line, offline hub) becomes one
``SkillFactoryError`` that says what to change. ``datasets``/``pyarrow`` are imported only
when needed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Optional

from skill_factory.errors import SkillFactoryError

logger = logging.getLogger(__name__)

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


def _read_local(path: Path, what: str) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SkillFactoryError(f"{what}: {path}:{lineno} is not valid JSON ({exc.msg})") from None
        return rows
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SkillFactoryError(f"{what}: {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise SkillFactoryError(f"{what}: {path} must hold a JSON list of records (or {{'data': [...]}})")
        return data
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    raise SkillFactoryError(
        f"{what}: unsupported file type {suffix or '(none)'} for {path}; use .jsonl, .json, .parquet or .csv"
    )


def _read_hub(hub_id: str, hub_config: Optional[str], hub_split: str, what: str) -> list[dict]:
    hint = (
        f"download it once on a connected machine (e.g. datasets.load_dataset({hub_id!r}"
        f"{', ' + repr(hub_config) if hub_config else ''}, split={hub_split!r}).to_json('file.jsonl')) "
        f"and set {what}.path to the file"
    )
    if _offline():
        raise SkillFactoryError(f"{what}: cannot load {hub_id!r} from the hub: offline mode is on; {hint}")
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise SkillFactoryError(f"{what}: loading {hub_id!r} needs the 'datasets' package; {hint}") from None
    try:
        ds = datasets.load_dataset(hub_id, hub_config, split=hub_split)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: all user-fixable
        raise SkillFactoryError(
            f"{what}: could not load {hub_id!r} (split {hub_split!r}) from the hub "
            f"({type(exc).__name__}: {str(exc)[:200]}); if you are offline, {hint}"
        ) from None
    return [dict(r) for r in ds]


def load_records(
    path: Optional[str],
    hub_id: Optional[str],
    *,
    hub_config: Optional[str] = None,
    hub_split: str = "test",
    what: str = "task",
) -> list[dict]:
    """Records from a local file (preferred) or a hub dataset, as a list of dicts."""
    if path:
        p = Path(os.path.expanduser(str(path)))
        if not p.is_file():
            raise SkillFactoryError(
                f"{what}.path: file not found: {p}; point it at a local .jsonl/.json/.parquet/.csv file"
            )
        rows = _read_local(p, what)
        logger.info("%s: loaded %d records from %s", what, len(rows), p)
    elif hub_id:
        rows = _read_hub(str(hub_id), hub_config, hub_split, what)
        logger.info("%s: loaded %d records from hub %s", what, len(rows), hub_id)
    else:
        raise SkillFactoryError(f"{what}: neither path nor hub_id is set; set {what}.path to a local file")
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise SkillFactoryError(f"{what}: record {bad[0]} is not an object with named fields")
    return rows


def require_columns(rows: list[dict], columns: list[str], what: str, fix_key: str) -> None:
    """Fail with the available column names if a required column is missing."""
    if not rows:
        return
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise SkillFactoryError(
                f"{what}: record {i} has no column {missing[0]!r} (it has {', '.join(map(repr, row))}); "
                f"set {fix_key} to the right column name"
            )
