"""Pre-flight: check an emitted training yaml with LLaMA-Factory's own code, without training.

Why: a multi-GPU job that dies after queueing for hours on a misspelled key, a dataset name
the ``dataset_info.json`` lacks, or a chat template whose special tokens the tokenizer does
not have, is the expensive way to find out. So before launching, in this process:

1. **parser**: the yaml is read as LLaMA-Factory reads it (OmegaConf) and handed to
   ``llamafactory.hparams.get_train_args``: the ``HfArgumentParser`` over its five argument
   dataclasses (unknown keys are rejected, as in ``llamafactory-cli``; ``ALLOW_EXTRA_ARGS`` is
   ignored here) and its cross-argument checks. Two things in it depend on the machine, not
   the yaml, and are neutralised in the copy the parser sees: ``use_cpu`` is forced on (no
   CUDA context in this process, and a ``bf16`` yaml parses on a machine without a GPU), and
   ``deepspeed`` is checked on its own (the file parses as JSON and names a ZeRO stage;
   the parser would insist on a distributed launch).
2. **dataset**: each name in ``dataset`` resolves through LLaMA-Factory's
   ``get_dataset_list`` against the yaml's ``dataset_dir``; a local file exists and has a
   type LLaMA-Factory reads; its first rows go through LLaMA-Factory's own ShareGPT
   converter and none may come out as a skipped ("abnormal") example.
3. **template**: the tokenizer is loaded as LLaMA-Factory loads it and the template applied
   to a copy: the template may not *add* tokens (its stop words and ``<|...|>`` markers must
   already be single tokens; an added token has no trained embedding, or none at all, the
   "index out of range" crash), and, when the tokenizer has a chat template, a sample
   conversation must encode to exactly the same ids both ways, and the first training row's
   prompt to exactly the ids generation renders for it (``add_generation_prompt``). This
   catches a wrong ``default_system`` (the ``qwen`` template injects a system prompt the tiny
   model's chat template does not have) and a template that renders a system turn otherwise.
   The model's ``chat_template_kwargs`` are passed to the tokenizer's template, as generation
   passes them. The rows checked in 2 are encoded to report token lengths and how many
   exceed ``cutoff_len``.

   ``template: null`` (omitted from the yaml): LLaMA-Factory 0.9.5's
   ``get_template_and_fix_tokenizer`` then builds the template with ``parse_template`` from
   the tokenizer's own chat template (slots cut out of renderings of placeholder messages).
   Its markers are the model's own text, so the added-token and single-token checks do not
   apply; the exact-ids comparisons do (``parse_template`` is exact for one user/assistant
   turn, but writes a template-level BOS before a system turn *and* the user turn when the
   tokenizer's ``encode("")`` has no BOS, which the row check reports).

Every problem found is collected and raised as one ``PreflightError``. A hub tokenizer that
is not on this machine can be skipped (dry runs on a laptop); the report says so.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from skill_factory.errors import SkillFactoryError

log = logging.getLogger(__name__)

SAMPLE_CONVERSATION = [{"role": "user", "content": "Using 3, 4 and 5, make 35."},
                       {"role": "assistant", "content": "(3 + 4) * 5 = 35, so the answer is 35."}]
_MARKER = re.compile(r"<\|[^|<>\s]+\|>")


class PreflightError(SkillFactoryError):
    """The emitted LLaMA-Factory files would not train; ``problems`` lists (check, message)."""

    def __init__(self, yaml_path: Path, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"sft pre-flight failed for {yaml_path} ({len(problems)} problem(s)):"]
        lines += [f"  - {check}: {what}" for check, what in problems]
        super().__init__("\n".join(lines))


def read_like_llamafactory(path: Path) -> dict:
    """The yaml as ``llamafactory-cli train <yaml>`` reads it (OmegaConf, no overrides)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(Path(path).absolute()))


@contextmanager
def _lf_environment() -> Iterator[None]:
    """Strict parsing, quieter logs, and no leftovers in this process afterwards."""
    saved = {k: os.environ.get(k) for k in ("ALLOW_EXTRA_ARGS", "LLAMAFACTORY_VERBOSITY")}
    os.environ.pop("ALLOW_EXTRA_ARGS", None)
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
    import transformers

    verbosity = transformers.utils.logging.get_verbosity()
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:  # the parser builds accelerate's process state (CPU); do not leave it behind
            from accelerate.state import PartialState

            PartialState._reset_state()
        except Exception:  # noqa: BLE001 - best effort clean-up
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_deepspeed(path: str) -> Optional[str]:
    """A problem with a DeepSpeed json config, or None."""
    p = Path(path)
    if not p.is_file():
        return f"file not found: {path}"
    try:
        conf = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        return f"{path} is not valid JSON ({exc})"
    stage = conf.get("zero_optimization", {}).get("stage") if isinstance(conf, dict) else None
    if stage not in (0, 1, 2, 3):
        return f"{path} names no ZeRO stage (zero_optimization.stage)"
    return None


def preflight(yaml_path: str | os.PathLike, *, local_files_only: bool = False,
              require_tokenizer: bool = True, strict_template: bool = True,
              sample_rows: int = 256, export_yaml: str | os.PathLike | None = None,
              chat_template_kwargs: Optional[dict] = None) -> dict:
    """Run the checks on ``yaml_path``; return a report, or raise ``PreflightError``.

    ``local_files_only``: never reach the hub for the tokenizer (dry runs);
    ``require_tokenizer``: a tokenizer that cannot be loaded is a problem, not a skip;
    ``export_yaml``: a LoRA merge config, parsed with LLaMA-Factory's export parser too;
    ``chat_template_kwargs``: the model's chat-template variables (``model.chat_template_kwargs``).
    """
    yaml_path = Path(yaml_path)
    problems: list[tuple[str, str]] = []
    report: dict[str, Any] = {"checks": {}}
    args = read_like_llamafactory(yaml_path)
    ds = args.pop("deepspeed", None)
    if ds is not None:
        why = check_deepspeed(str(ds))
        if why:
            problems.append(("deepspeed", why))
        report["checks"]["deepspeed"] = why or "ok (json and ZeRO stage; the parser does not see it)"
    with _lf_environment():
        from llamafactory.hparams import get_train_args

        try:
            model_args, data_args, _train, _ft, _gen = get_train_args({**args, "use_cpu": True})
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any rejection is the finding
            problems.append(("parser", (f"LLaMA-Factory's argument parser rejects the yaml: {_first_line(exc)} "
                                        "(fix: remove or correct that setting; sft.extra keys are passed verbatim)")))
            raise PreflightError(yaml_path, problems) from exc
        report["checks"]["parser"] = "ok"
        rows = _check_dataset(data_args, problems, report, sample_rows)
        _check_template(model_args, data_args, rows, problems, report, local_files_only=local_files_only,
                        require_tokenizer=require_tokenizer, strict=strict_template,
                        template_kwargs=dict(chat_template_kwargs or {}))
        if export_yaml is not None:
            from llamafactory.hparams import get_infer_args

            try:
                get_infer_args(read_like_llamafactory(Path(export_yaml)))
                report["checks"]["export"] = "ok"
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                problems.append(("export", f"LLaMA-Factory's export parser rejects {export_yaml}: "
                                 f"{_first_line(exc)}"))
    if problems:
        raise PreflightError(yaml_path, problems)
    return report


# --- dataset --------------------------------------------------------------------------

def _read_rows(files: list[str], limit: int) -> list[dict]:
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in files:
        if f.endswith(".parquet"):
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=min(limit, 1024)):
                rows += batch.to_pylist()
                if len(rows) >= limit:
                    break
        elif f.endswith((".jsonl", ".json")):
            text = Path(f).read_text()
            if f.endswith(".jsonl"):
                rows += [json.loads(line) for line in text.splitlines()[:limit] if line.strip()]
            else:
                data = json.loads(text)
                rows += data[:limit] if isinstance(data, list) else []
        if len(rows) >= limit:
            break
    return rows[:limit]


def _check_dataset(data_args, problems: list, report: dict, limit: int) -> list[dict]:
    """Resolve every dataset name with LLaMA-Factory; return the first rows of local files."""
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.extras.constants import FILEEXT2TYPE

    try:
        attrs = get_dataset_list(data_args.dataset, data_args.dataset_dir)
    except Exception as exc:  # noqa: BLE001
        problems.append(("dataset", f"{_first_line(exc)} (dataset_dir {data_args.dataset_dir}; fix: the "
                         "dataset name must be an entry of its dataset_info.json)"))
        return []
    checked: list[dict] = []
    notes = []
    for attr in attrs:
        if attr.load_from != "file":
            notes.append(f"{attr.dataset_name}: {attr.load_from}, loaded by LLaMA-Factory at train time (not read here)")
            continue
        local = os.path.join(data_args.dataset_dir, attr.dataset_name)
        if os.path.isdir(local):
            files = sorted(os.path.join(local, f) for f in os.listdir(local))
        elif os.path.isfile(local):
            files = [local]
        else:
            problems.append(("dataset", f"entry file_name {attr.dataset_name}: {local} not found"))
            continue
        types = {FILEEXT2TYPE.get(os.path.splitext(f)[-1][1:]) for f in files}
        if None in types or len(types) != 1:
            problems.append(("dataset", f"{local}: LLaMA-Factory needs files of one type among "
                             f"{', '.join(FILEEXT2TYPE)}; found {', '.join(sorted(Path(f).name for f in files))}"))
            continue
        rows = _read_rows(files, limit)
        if not rows:
            problems.append(("dataset", f"{local}: no rows"))
            continue
        converter = get_dataset_converter(attr.formatting, attr, data_args)
        broken = []
        for i, row in enumerate(rows):
            try:
                out = converter(row)
            except Exception as exc:  # noqa: BLE001 - a KeyError on a missing column, say
                broken.append(f"row {i}: {type(exc).__name__} {exc}")
                continue
            if not out["_prompt"] or not out["_response"]:
                broken.append(f"row {i}: skipped as abnormal by LLaMA-Factory")
            else:
                checked.append(out)
        if broken:
            problems.append(("dataset", f"{attr.dataset_name}: {len(broken)} of the first {len(rows)} rows do not "
                             f"convert with the entry's columns/tags ({'; '.join(broken[:3])})"))
        notes.append(f"{attr.dataset_name}: {len(rows)} rows converted by LLaMA-Factory's {attr.formatting} converter")
    report["checks"]["dataset"] = "; ".join(notes) or "no dataset"
    return checked


# --- template and tokenizer -----------------------------------------------------------

def _load_tokenizer(model_args, local_files_only: bool):
    """The tokenizer as LLaMA-Factory loads it; None when only the hub has it and we may not ask."""
    from transformers import AutoTokenizer

    path = model_args.model_name_or_path
    local_only = local_files_only and not Path(path).is_dir()
    kwargs = dict(use_fast=model_args.use_fast_tokenizer, split_special_tokens=model_args.split_special_tokens,
                  padding_side="right", trust_remote_code=model_args.trust_remote_code,
                  cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.hf_hub_token)
    return AutoTokenizer.from_pretrained(path, local_files_only=local_only, **kwargs)


def _check_template(model_args, data_args, rows: list[dict], problems: list, report: dict, *,
                    local_files_only: bool, require_tokenizer: bool, strict: bool,
                    template_kwargs: Optional[dict] = None) -> None:
    from llamafactory.data import template as lf_template

    name = data_args.template  # None: parsed from the tokenizer's chat template
    template_kwargs = template_kwargs or {}
    if name is not None and name not in lf_template.TEMPLATES:
        problems.append(("template", f"'{name}' is not a LLaMA-Factory template (fix: set model.template to one "
                         "of LLaMA-Factory's template names, e.g. qwen, llama3)"))
        return
    try:
        tok = _load_tokenizer(model_args, local_files_only)
    except Exception as exc:  # noqa: BLE001
        path = model_args.model_name_or_path
        if local_files_only and not Path(path).is_dir():
            why = f"the tokenizer of {path} is not on this machine (the hub is not asked in a dry run)"
        else:
            why = f"cannot load the tokenizer of {path}: {_first_line(exc)}"
        if require_tokenizer:
            problems.append(("template", why))
        else:
            report["checks"]["template"] = f"skipped: {why}"
            log.warning("sft pre-flight: template check skipped (%s)", why)
        return
    if name is None and not isinstance(tok.chat_template, str):
        problems.append(("template", f"model.template is null, but the tokenizer of {model_args.model_name_or_path} "
                         "has no chat template to parse (LLaMA-Factory would fall back to its 'empty' template; "
                         "fix: set model.template to a LLaMA-Factory template name)"))
        return
    label = f"'{name}'" if name is not None else "the template LLaMA-Factory parses from the chat template"
    before = set(tok.get_vocab())
    fixed = copy.deepcopy(tok)
    saved = lf_template.TEMPLATES.get(name)
    if name is not None:
        lf_template.TEMPLATES[name] = copy.deepcopy(saved)  # get_template_and_fix_tokenizer mutates it
    try:
        template = lf_template.get_template_and_fix_tokenizer(fixed, data_args)
    except Exception as exc:  # noqa: BLE001
        problems.append(("template", f"{label} cannot be applied to the tokenizer: {_first_line(exc)}"))
        return
    finally:
        if name is not None:
            lf_template.TEMPLATES[name] = saved
    fix = ("fix: set model.template to the LLaMA-Factory template that matches this model's chat format, "
           "or null to parse the tokenizer's own")
    added = sorted(set(fixed.get_vocab()) - before)
    if added:
        problems.append(("template", f"{label} needs tokens the tokenizer of {model_args.model_name_or_path} "
                         f"lacks: {', '.join(added)} (they would get no trained embedding; {fix})"))
        return
    if name is not None:  # a parsed template's markers are the model's own text, whatever their tokens
        slots = []
        for fmt in (template.format_prefix, template.format_system, template.format_user,
                    template.format_assistant):
            slots += [s for s in getattr(fmt, "slots", []) if isinstance(s, str)]
        markers = sorted({m for s in slots for m in _MARKER.findall(s)} | set(template.stop_words))
        split = [m for m in markers if len(fixed.encode(m, add_special_tokens=False)) != 1]
        if split:
            problems.append(("template", f"{label} writes {', '.join(split)}, which the tokenizer splits into "
                             f"several tokens ({fix})"))
            return
    result = "ok (no added tokens; markers are single tokens)"
    if tok.chat_template:
        mismatch = _render_mismatch(template, fixed, tok, rows[:1], template_kwargs)
        if mismatch is not None:
            what, ours, text = mismatch
            what = (f"{label} (default_system {data_args.default_system!r}) renders {what} differently "
                    f"from the tokenizer's own chat template:\n      LLaMA-Factory: {fixed.decode(ours)!r}\n"
                    f"      tokenizer:     {text!r}\n    (fix: set model.default_system to the system prompt the "
                    "chat template adds ('' for none) or model.template to the matching template (null: parsed "
                    "from the chat template); sft.strict_template=false only warns)")
            if strict:
                problems.append(("template", what))
                return
            log.warning("sft pre-flight: %s", what)
            result = "warning: renders differently from the tokenizer's chat template"
        else:
            result = "ok (renders exactly as the tokenizer's chat template)"
    report["checks"]["template"] = result
    if rows:
        lengths = [len(_lf_ids(template, fixed, row["_prompt"] + row["_response"], system=row.get("_system") or None))
                   for row in rows]
        report["tokens"] = {"rows": len(lengths), "mean": round(sum(lengths) / len(lengths), 1),
                            "max": max(lengths), "over_cutoff": sum(n > data_args.cutoff_len for n in lengths),
                            "cutoff_len": data_args.cutoff_len}
        if report["tokens"]["over_cutoff"]:
            log.warning("sft pre-flight: %d of the first %d rows exceed cutoff_len=%d tokens and will be truncated",
                        report["tokens"]["over_cutoff"], len(lengths), data_args.cutoff_len)


def _render_mismatch(template, fixed, tok, rows: list[dict], template_kwargs: dict):
    """(what, LLaMA-Factory's ids, the tokenizer's text) of the first rendering that differs, or None.

    The sample conversation is compared whole; a single-turn training row by its prompt,
    against the prompt generation renders for it (``add_generation_prompt=True``): the prompt
    SFT trains after must be the one sampling, evaluation and RL show the model.
    """
    ours = _lf_ids(template, fixed, SAMPLE_CONVERSATION)
    text = tok.apply_chat_template(SAMPLE_CONVERSATION, tokenize=False, **template_kwargs)
    if ours != tok(text, add_special_tokens=False)["input_ids"]:
        return "a conversation", ours, text
    for row in rows:
        if len(row["_prompt"]) != 1:  # a multi-turn row: LLaMA-Factory trains each turn on its own
            continue
        system = row.get("_system") or None
        ours, _ = template.encode_oneturn(fixed, row["_prompt"] + row["_response"], system)
        messages = ([{"role": "system", "content": system}] if system else []) + list(row["_prompt"])
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
        if ours != tok(text, add_special_tokens=False)["input_ids"]:
            return "the first training row's prompt", ours, text
    return None


def _lf_ids(template, tokenizer, messages: list[dict], system: Optional[str] = None) -> list[int]:
    prompt, response = template.encode_oneturn(tokenizer, messages, system)
    return prompt + response
