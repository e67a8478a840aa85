"""eval: accuracy, pass@k, skill usage and budget forcing of one model on a suite.

    skillfactory stages=[eval]                                   # this run's RL checkpoint
    skillfactory stages=[eval] eval.model=sft                     # or base, or a path / hub id
    skillfactory stages=[eval] eval=paper eval.tasks.gsm8k.params.path=data/gsm8k.jsonl
    skillfactory stages=[eval] eval.temperature=0.7 eval.n=8      # greedy + 8 samples (pass@k)

Which model (``eval.model``): ``base`` (the run's base model: hub id / path, or the bootstrap
artifact), ``sft`` or ``rl`` (the checkpoint that stage of this run produced, read from its
manifest; the stage is built first when missing), or any local path / hub id, so baselines,
RL-only models and other people's checkpoints are evaluated by exactly the same code. The
stage's upstream follows the choice, so its fingerprint covers the checkpoint evaluated.

What it does (``skill_factory.evaluation``):

1. builds the suite (``conf/eval/``): held-out Countdown targets, identical questions for
   every run (``eval.question_seed``), the trained prompt variant; GSM8K / CSQA entries
   without a file are skipped with a warning;
2. answers every entry with every decoding (greedy; sampled when ``eval.temperature > 0``)
   through the generation backend of the model (vLLM on GPU, transformers on CPU), grades
   each response with the task's verifier and reads its skill usage from the tags;
3. runs the budget-forcing sweep (``eval.budget_forcing.budgets``) on the chosen entries;
4. writes ``responses/*.jsonl`` and ``budget/*.jsonl`` (one graded record per response),
   ``results.json``, ``results.md`` and ``plots/*.png`` into the artifact, copies the report
   into the run directory, logs the table, and sends metrics and plots to W&B when enabled.

Resumable: each (entry, decoding) and (entry, budget) unit is written atomically when done,
so a killed evaluation continues with the first missing unit.

Manifest counts: the model evaluated, responses, skipped entries, and the flat metrics
(``metrics``: ``<entry>/<decoding>/accuracy`` …) that the W&B tracker logs.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from skill_factory.models import base_model_path, check_model, model_upstream
from skill_factory.pipeline import stage
from skill_factory.stages.sample import MODEL_OUTPUT_KEYS, _task_keys

log = logging.getLogger(__name__)

RESPONSES_DIR = "responses"
BUDGET_DIR = "budget"
MODEL_KINDS = ("base", "sft", "rl")

CONFIG_KEYS = (*MODEL_OUTPUT_KEYS, *_task_keys(), "task.template", "prompts.variants", "prompts.system",
               "eval", "seed")


def eval_upstream(cfg) -> tuple[str, ...]:
    """The stage that provides the evaluated model."""
    kind = cfg.eval.model
    if kind in ("sft", "rl"):
        return (kind,)
    if kind == "base":
        return model_upstream(cfg)
    return ()


def checkpoint_from_manifest(artifact) -> str:
    """The checkpoint folder a training stage's artifact names in its manifest counts."""
    from skill_factory.models import trained_checkpoint

    return trained_checkpoint(artifact)


def eval_model_path(cfg, inputs) -> str:
    """Hub id or local directory of the model ``eval.model`` names."""
    kind = cfg.eval.model
    if kind == "base":
        return base_model_path(cfg, inputs)
    if kind == "sft":
        from skill_factory.stages.sft import sft_checkpoint

        return sft_checkpoint(inputs["sft"])
    if kind == "rl":
        try:
            from skill_factory.stages.rl import rl_checkpoint  # type: ignore[attr-defined]
        except ImportError:
            rl_checkpoint = checkpoint_from_manifest
        return rl_checkpoint(inputs["rl"])
    return kind


def _check(cfg, problems) -> None:
    from skill_factory.evaluation.suite import check

    if cfg.eval.model == "base":
        check_model(cfg, problems)
    elif cfg.eval.model not in MODEL_KINDS:
        path = Path(cfg.eval.model).expanduser()
        if cfg.eval.model.startswith((".", "/", "~")) and not path.is_dir():
            problems.add("eval.model", f"'{cfg.eval.model}' is neither base/sft/rl nor an existing directory",
                         "use base, sft, rl, a local model directory or a hub id (owner/name)")
    check(cfg, problems)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        for r in records:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


@stage("eval", config=CONFIG_KEYS, upstream=eval_upstream, resumable=True, check=_check)
def evaluate(ctx) -> dict:
    from skill_factory.evaluation.budget import ForcingSettings
    from skill_factory.evaluation.evaluate import aggregate, answer, answer_forced, flatten_metrics
    from skill_factory.evaluation.report import write_run_report
    from skill_factory.evaluation.suite import GREEDY, Decoding, build_suite, decodings, select
    from skill_factory.generation import make_backend
    from skill_factory.progress import progress
    from skill_factory.stages.sample import TokenRate

    cfg, e, out = ctx.cfg, ctx.cfg.eval, ctx.out_dir
    entries, skipped = build_suite(cfg)
    decs = decodings(e)
    bf = e.budget_forcing
    if bf.decoding == GREEDY:
        bf_dec = Decoding(GREEDY, 1, 0.0, 1.0)
    else:
        bf_dec = next(d for d in decs if d.name == bf.decoding)
    bf_entries = select(entries, list(bf.tasks)) if bf.budgets else []
    settings = ForcingSettings.from_config(bf)
    units = {(x.key, d.name): (x, d, out / RESPONSES_DIR / f"{_safe(x.key)}.{d.name}.jsonl")
             for x in entries for d in decs}
    bf_units = {(x.key, b): (x, b, out / BUDGET_DIR / f"{_safe(x.key)}.B{b}.jsonl")
                for x in bf_entries for b in bf.budgets}
    todo = [k for k, (_, _, p) in units.items() if not p.exists()]
    bf_todo = [k for k, (_, _, p) in bf_units.items() if not p.exists()]
    if ctx.resuming and (len(todo) < len(units) or len(bf_todo) < len(bf_units)):
        ctx.log.info("eval: %d of %d units already written; resuming",
                     len(units) + len(bf_units) - len(todo) - len(bf_todo), len(units) + len(bf_units))
    path = eval_model_path(cfg, ctx.inputs)
    ctx.log.info("eval: model %s (%s), suite %s: %d entries, decodings %s, budgets %s", e.model, path, e.suite,
                 len(entries), ", ".join(d.name for d in decs), list(bf.budgets) or "none")

    if todo or bf_todo:
        backend = make_backend(cfg.model, path)
        with backend:
            if todo:
                total = sum(len(units[k][0].questions) * units[k][1].n for k in todo)
                with progress("eval", total=total, unit="responses") as bar:
                    rate = TokenRate(bar)
                    for k in todo:
                        entry, dec, file = units[k]
                        _write_jsonl(file, answer(backend, entry, dec, max_new_tokens=e.max_new_tokens,
                                                  seed=cfg.seed, on_progress=rate))
            if bf_todo:
                total = sum(len(bf_units[k][0].questions) * bf_dec.n for k in bf_todo)
                with progress("budget forcing", total=total, unit="responses") as bar:
                    for k in bf_todo:
                        entry, budget, file = bf_units[k]
                        records = answer_forced(backend, entry, bf_dec, budget=budget, settings=settings,
                                                seed=cfg.seed)
                        _write_jsonl(file, records)
                        bar.advance(len(records), info=f"{entry.key} B={budget}")

    responses = {k: _read_jsonl(p) for k, (_, _, p) in units.items()}
    forced = {k: _read_jsonl(p) for k, (_, _, p) in bf_units.items()}
    results = aggregate(entries, skipped, responses, forced, decs, e.pass_k,
                        budget_decoding=bf_dec.name if bf_units else None)
    results["run"] = {
        "suite": e.suite,
        "model": e.model,
        "model_path": path,
        "model_name": cfg.model.name,
        "seed": cfg.seed,
        "question_seed": e.question_seed,
        "max_new_tokens": e.max_new_tokens,
        "decodings": [d.__dict__ for d in decs],
        "budget_forcing": {"budgets": list(bf.budgets), "max_rounds": bf.max_rounds, "decoding": bf.decoding,
                           "continuation": list(bf.continuation)},
        "fingerprint": ctx.fingerprint,
        "artifact": str(out),
        "upstream": {name: art.fingerprint for name, art in sorted(ctx.inputs.items())},
    }
    write_run_report(results, out)
    publish(results, cfg.paths.run_dir)
    n_responses = sum(len(r) for r in responses.values())
    return {
        "suite": e.suite,
        "model": e.model,
        "model_path": path,
        "entries": len(entries),
        "responses": n_responses,
        "budget_responses": sum(len(r) for r in forced.values()),
        "skipped": sorted(skipped),
        "metrics": {k.removeprefix("eval/"): v for k, v in flatten_metrics(results).items()},
    }


def publish(results: dict, run_dir: Any) -> None:
    """The report into the run directory, the table into the log, plots and table to W&B.

    Called by the stage when it produces its artifact; call it again on a cached artifact
    (``results.json`` of the artifact) to republish into another run directory.
    """
    from skill_factory.evaluation.report import PLOTS_DIR, run_markdown, write_run_report

    if run_dir:
        files = write_run_report(results, run_dir)
        log.info("eval: report written to %s (%s)", run_dir, ", ".join(p.name for p in files))
        plots = sorted((Path(run_dir) / PLOTS_DIR).glob("*.png"))
    else:
        plots = sorted((Path(results["run"]["artifact"]) / PLOTS_DIR).glob("*.png"))
    log.info("eval results:\n%s", run_markdown(results))
    _log_wandb(results, plots)


def publish_artifact(artifact, run_dir: Any) -> None:
    """Publish a finished eval artifact's report into ``run_dir`` (and the log, and W&B).

    The stage publishes when it produces its artifact; a run that finds the artifact cached
    (same config, same checkpoint) calls this to get the same report in its own directory.
    """
    from skill_factory.evaluation.report import RESULTS_JSON

    publish(json.loads((Path(artifact.path) / RESULTS_JSON).read_text()), run_dir)


def _log_wandb(results: dict, plots: list[Path]) -> None:
    """Plots and the accuracy table to the active W&B run, if there is one (``logger=wandb``
    starts it before any stage runs; the scalar metrics reach it through the manifest counts)."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    rows = [[key, dec, s["n"], s["accuracy"], s["stderr"], s["format_rate"], s["mean_tokens"]]
            for key, t in results["tasks"].items() for dec, s in t["decodings"].items()]
    payload = {f"eval/plots/{p.stem}": wandb.Image(str(p)) for p in plots}
    payload["eval/table"] = wandb.Table(columns=["task", "decoding", "n", "accuracy", "stderr", "format_rate",
                                                 "mean_tokens"], data=rows)
    run.log(payload)
