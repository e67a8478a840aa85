"""traces: completions and kept reflections rearranged into SkillFactory SFT traces.

    skillfactory stages=[traces]                                    # on this run's reflections
    skillfactory stages=[traces] traces=mixed                       # 0C, *C, *C*IC, *CC together
    skillfactory stages=[traces] traces.input_dataset=path/or/hub-id \\
        traces.push_to_hub=me/my-sft-data                          # published raw data in, hub repo out

Input: the reflect stage's artifact, or ``traces.input_dataset`` (a published raw dataset in
the schema of method.md §3, columns found by ``traces.columns``; then no reflect stage
runs). Columns are checked up front, with one error listing every problem. The reflect
artifact carries per-reflection ``reflection_kept`` flags; a published dataset carries raw
reflections, so the same keep rule (``skill_factory.stages.reflect.judge``: verdict equals
the verifier, none of ``reflect.banned_patterns``) is applied here.

Output (``data/train-00000-of-00001.parquet``, hub layout, loadable with
``datasets.load_dataset("parquet", ...)`` and by the sft stage): ShareGPT ``conversations``
(user, assistant), ``format`` (``*C`` and ``*C_full`` are distinct), ``n_samples``,
``question_id``, ``completion_ids`` (the source completions, in trace order) and
``sample_correct``. The rows are shuffled with the run seed; an identical config gives a
byte-identical file. The trace layout and formats are in ``skill_factory.tracebuild``.

Manifest counts: input counts (rows, usable completions, kept reflections, ...), per format
rows, rows by n, questions skipped and traces skipped by reason, and trace lengths in chars
and, when the model's tokenizer loads offline, in tokens.

``traces.push_to_hub`` also pushes the dataset to the hub with the token in ``HF_TOKEN``
(never written anywhere). It is part of the artifact's identity: a pushed artifact records
where it went, and rerunning the same command does not push again.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import fields
from pathlib import Path

from skill_factory.errors import SkillFactoryError
from skill_factory.models import BOOTSTRAP_MODEL_DIR, model_upstream
from skill_factory.pipeline import stage

log = logging.getLogger(__name__)

DATA_FILE = "data/train-00000-of-00001.parquet"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _traces_keys() -> tuple[str, ...]:
    from skill_factory.config.schema import TracesConfig

    return tuple(f"traces.{f.name}" for f in fields(TracesConfig))


# the keep rule for published reflections, and the tokenizer of the length statistics
CONFIG_KEYS = (*_traces_keys(), "traces.input_identity", "phrases", "seed", "reflect.banned_patterns",
               "model.name", "model.path")


def _upstream(cfg) -> tuple[str, ...]:
    """reflect (and the model build it needs) unless a published dataset is the input.

    With ``traces.input_dataset`` nothing runs upstream: token statistics then use
    ``model.path`` only, never a model built just to count tokens.
    """
    if cfg.traces.input_dataset:
        return ()
    return (*(model_upstream(cfg) if cfg.traces.token_stats else ()), "reflect")


def _check(cfg, problems) -> None:
    from skill_factory import rawdata

    t = cfg.traces
    if t.input_dataset is not None:
        if not t.input_dataset.strip():
            problems.add("traces.input_dataset", "is empty", "use null (the reflect stage) or a path / hub id")
        elif rawdata.is_local_source(t.input_dataset) and not Path(t.input_dataset).expanduser().exists():
            problems.add("traces.input_dataset", f"no such file or folder: {t.input_dataset}",
                         "point it at a parquet / jsonl / json file or folder, or a hub id")
    else:
        variants = list(cfg.prompts.variants or {})
        unknown = [v for v in (t.variants or []) if v not in variants]
        if unknown:
            problems.add("traces.variants", f"{', '.join(unknown)} not among this run's prompt variants "
                         f"({', '.join(variants)})", "name variants of prompts.variants, or null for all")
        usable = [v for v in variants if t.variants is None or v in t.variants]
        if t.distinct_variants and t.n_samples > len(usable):
            problems.add("traces.n_samples", f"{t.n_samples} samples from distinct prompt variants, but only "
                         f"{len(usable)} variant(s) are used", "lower traces.n_samples, add variants, or set "
                         "traces.distinct_variants=false")
    if t.push_to_hub is not None:
        if not _REPO_ID.match(t.push_to_hub):
            problems.add("traces.push_to_hub", f"'{t.push_to_hub}' is not a hub repo id",
                         "use owner/name, or null to not push")
        if not os.environ.get("HF_TOKEN"):
            problems.add("traces.push_to_hub", "HF_TOKEN is not set in the environment",
                         "export HF_TOKEN=<a write token> (it is read from the environment only)")


def _load_input(ctx):
    """The input as a canonical pyarrow Table, and where it came from."""
    from skill_factory import rawdata as rd

    t = ctx.cfg.traces
    if t.input_dataset:
        source, key = t.input_dataset, "traces.columns"
        ds = rd.load_raw_dataset(source, split=t.input_split, revision=t.input_revision, key="traces.input_dataset")
        columns = t.columns
    else:
        source, key = str(ctx.inputs["reflect"].path), "reflect artifact columns"
        ds = rd.load_artifact(source)
        columns = rd.RawColumns()
    table = rd.canonical_table(rd.arrow_table(ds), columns,
                               required=("question", "completion", "is_correct", "reflections"),
                               optional=("prompt_variant", "extracted_answer", "answer"), key=key, source=source)
    _check_table(table, t, source)
    return table, source


def _check_table(table, t, source: str) -> None:
    """Problems of the input against the settings, all in one error."""
    import pyarrow.compute as pc

    from skill_factory import rawdata as rd

    problems = []
    has_variants = rd.PROMPT_VARIANT in table.column_names
    present = sorted(v for v in pc.unique(table.column(rd.PROMPT_VARIANT)).to_pylist() if v is not None) \
        if has_variants else []
    if t.variants is not None:
        if not has_variants:
            problems.append("traces.variants: the input has no prompt variant column; set traces.columns."
                            "prompt_variant, or traces.variants=null")
        else:
            missing = [v for v in t.variants if v not in present]
            if missing:
                problems.append(f"traces.variants: {', '.join(missing)} not in the input (its variants: "
                                f"{', '.join(present) or 'none'})")
    if t.distinct_variants:
        if not has_variants:
            problems.append("traces.distinct_variants: the input has no prompt variant column; set "
                            "traces.columns.prompt_variant, or traces.distinct_variants=false")
        else:
            used = [v for v in present if t.variants is None or v in t.variants]
            if t.n_samples > len(used):
                problems.append(f"traces.n_samples: {t.n_samples} samples from distinct variants, but the input "
                                f"has {len(used)} variant(s) ({', '.join(used)}); lower traces.n_samples or set "
                                "traces.distinct_variants=false")
    if problems:
        raise SkillFactoryError(f"{len(problems)} input problem(s) in {source}:\n  - " + "\n  - ".join(problems))


def _tokenizer(cfg, inputs):
    """The base model's tokenizer for length statistics, or None (with the reason logged)."""
    from skill_factory import rawdata as rd

    if cfg.model.path is not None:
        path = cfg.model.path
    elif "bootstrap" in inputs:
        path = str(Path(inputs["bootstrap"].path) / BOOTSTRAP_MODEL_DIR)
    else:
        log.warning("traces: no tokenizer (model '%s' has no path and is not built in this run); "
                    "token-length statistics skipped", cfg.model.name)
        return None, None
    try:
        from transformers import AutoTokenizer

        local = rd.is_local_source(path)
        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                trust_remote_code=cfg.model.trust_remote_code)
        except (OSError, ValueError):
            if local or os.environ.get("HF_HUB_OFFLINE") or not rd.hub_reachable():
                raise
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except Exception as exc:
        log.warning("traces: cannot load the tokenizer of '%s' (%s); token-length statistics skipped",
                    path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None, None
    return tok, path


def token_lengths(tokenizer, texts, batch: int = 512) -> list[int]:
    """Tokens per text, without special tokens (the assistant content as SFT sees it)."""
    out: list[int] = []
    for lo in range(0, len(texts), batch):
        ids = tokenizer(list(texts[lo:lo + batch]), add_special_tokens=False)["input_ids"]
        out.extend(len(i) for i in ids)
    return out


def write_parquet(table, path: Path) -> None:
    """Fixed writer options and row order, so equal tables give byte-identical files."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=4096, compression="zstd", compression_level=3,
                   use_dictionary=["format", "question_id"], write_statistics=True, version="2.6")
    os.replace(tmp, path)


def push_dataset(table, repo_id: str, private: bool) -> None:
    """Push ``table`` as the train split of hub dataset ``repo_id`` (token from HF_TOKEN)."""
    from skill_factory import rawdata as rd
    from skill_factory.provenance import scrub_text

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise SkillFactoryError("traces.push_to_hub: HF_TOKEN is not set in the environment; export a write token")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or not rd.hub_reachable():
        raise SkillFactoryError(f"traces.push_to_hub: cannot push to '{repo_id}': the Hugging Face Hub cannot be "
                                "reached (offline, or HF_HUB_OFFLINE is set); the dataset is in the artifact, push "
                                "it later or from a machine with network")
    import datasets

    try:
        datasets.Dataset(table).push_to_hub(repo_id, split="train", private=private, token=token)
    except Exception as exc:
        message = scrub_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise SkillFactoryError(f"traces.push_to_hub: pushing to '{repo_id}' failed: {message}") from exc


@stage("traces", config=CONFIG_KEYS, upstream=_upstream, check=_check)
def traces(ctx) -> dict:
    from skill_factory import tracebuild as tb
    from skill_factory.stages.reflect import compile_banned

    cfg, t = ctx.cfg, ctx.cfg.traces
    table, source = _load_input(ctx)
    rows = tb.rows_from_table(table)
    del table
    banned = None if rows.kept is not None else compile_banned(cfg.reflect.banned_patterns)
    result = tb.build_traces(rows, tb.TraceOptions.from_config(t, cfg.seed), tb.PhrasePools.from_config(cfg.phrases),
                             banned=banned)
    del rows
    out = result.table()
    write_parquet(out, ctx.out_dir / DATA_FILE)
    counts = dict(result.stats)
    counts["input_source"] = source
    for fmt, st in counts["formats"].items():
        ctx.log.info("traces: %s: %d rows from %d questions; skipped questions %s", fmt, st["rows_written"],
                     st["questions"], st["skipped_questions"] or "none")
    if t.token_stats:
        tokenizer, path = _tokenizer(cfg, ctx.inputs)
        if tokenizer is not None:
            counts["tokens"] = tb.length_stats(token_lengths(tokenizer, result.assistant), result.format, t.formats)
            counts["lengths_counted_with"] = path
    if t.push_to_hub:
        push_dataset(out, t.push_to_hub, t.hub_private)
        counts["pushed_to"] = t.push_to_hub
        ctx.log.info("traces: pushed %d rows to hub dataset %s", out.num_rows, t.push_to_hub)
    return counts
