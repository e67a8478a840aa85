"""Overhead of the sample stage over a bare backend ``generate`` (CPU, hf backend).

    .venv/bin/python benchmarks/sampling_overhead.py                       # random tiny model
    .venv/bin/python benchmarks/sampling_overhead.py --model outputs/artifacts/bootstrap/<fp>/model

Why: the stage adds question generation, chat rendering, grading every completion,
parquet shards, stats and a manifest around the model's own work. This measures the whole
stage (``Runner`` on a fresh artifact directory, model load included) against loading the
same backend and calling ``generate`` once over the very same prompts, seeds and sampling
settings, and prints stage / bare as a ratio (target <= 1.10). Each side runs ``--repeats``
times, alternating, and the fastest run of each counts; imports are warmed up first, as
both pay them once per process.

Without ``--model`` a random tiny Llama is built (tests/tiny_lm.py); it never stops early,
so every completion is ``--max-new-tokens`` long. The embedded tiny model's answers are
short, which makes per-completion overhead (grading) weigh more: pass its folder to see that.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from skill_factory.config.load import to_typed
    from skill_factory.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_typed(hydra_compose("config", overrides=overrides))


def bare(cfg, model_path: str) -> tuple[float, int]:
    """Load the backend and generate every (question, variant) prompt in one call."""
    from skill_factory.generation import chat_messages, derive_seed, make_backend
    from skill_factory.stages.sample import sampling_from
    from skill_factory.tasks.config import get_task

    start = time.perf_counter()
    task = get_task(cfg.task)
    questions = task.questions("train", cfg.sample.num_questions, seed=cfg.seed)
    keys = [(q, v, t) for q in questions for v, t in cfg.prompts.variants.items()]
    conversations = [chat_messages(task.render(q, t), cfg.prompts.system) for q, _, t in keys]
    seeds = [derive_seed(cfg.seed, "sample", q.id, v) for q, v, _ in keys]
    with make_backend(cfg.model, model_path) as backend:
        result = backend.generate(conversations, sampling_from(cfg.sample, cfg.seed, cfg.sample.n), seeds=seeds)
    return time.perf_counter() - start, result.generated_tokens


def stage(cfg) -> tuple[float, int]:
    from skill_factory.pipeline import REGISTRY, Runner

    start = time.perf_counter()
    arts = Runner(cfg, Path(cfg.paths.artifacts), registry={"sample": REGISTRY["sample"]}).run()
    return time.perf_counter() - start, arts["sample"].counts["tokens_generated"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a Hugging Face model folder (default: a random tiny Llama)")
    # defaults: the sample=tiny preset (400 questions x 4 variants x 4, 64 tokens, shards of 200)
    ap.add_argument("--questions", type=int)
    ap.add_argument("--n", type=int)
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--shard-size", type=int)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import skill_factory.stages  # noqa: F401 - registers the stages
    from tiny_lm import build_tiny_lm

    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        model = args.model or str(build_tiny_lm(Path(tmp) / "model", hidden=64, layers=2))
        base = ["stages=[sample]", "model=tiny", f"model.path={model}", "sample=tiny"]
        for key, value in (("num_questions", args.questions), ("n", args.n),
                           ("max_new_tokens", args.max_new_tokens), ("shard_size", args.shard_size)):
            if value is not None:
                base.append(f"sample.{key}={value}")
        warm = compose(base + ["sample.num_questions=2"])
        bare(warm, model)  # imports and first-call costs, paid once per process by both sides
        bare_times, stage_times = [], []
        for i in range(args.repeats):
            os.environ["SKILLFACTORY_HOME"] = str(Path(tmp) / f"home{i}")  # a fresh, empty cache
            cfg = compose(base)
            t, bare_tokens = bare(cfg, model)
            bare_times.append(t)
            t, stage_tokens = stage(cfg)
            stage_times.append(t)
            assert stage_tokens == bare_tokens, (stage_tokens, bare_tokens)  # the same work
        sc = cfg.sample
        completions = sc.num_questions * len(cfg.prompts.variants) * sc.n
        b, s = min(bare_times), min(stage_times)
        print(f"workload: {sc.num_questions} questions x {len(cfg.prompts.variants)} variants x {sc.n} samples = "
              f"{completions} completions, {bare_tokens} tokens; shards of {sc.shard_size} questions; "
              f"batches of {cfg.model.generation_batch_size}")
        print(f"bare backend generate: {b:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in bare_times)})")
        print(f"sample stage:          {s:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in stage_times)})")
        print(f"overhead ratio stage / bare: {s / b:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
