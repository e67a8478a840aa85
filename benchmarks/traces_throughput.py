"""Throughput and memory of the trace builder, at two input sizes.

Run::

    python benchmarks/traces_throughput.py                    # 8,000 and 80,000 questions
    python benchmarks/traces_throughput.py --questions 2000   # 2,000 and 20,000 (quicker)
    python benchmarks/traces_throughput.py --formats '*C_full' 0C '*C*IC' '*CC'
    python benchmarks/traces_throughput.py --kept-flags       # as on the reflect stage's artifact

A synthetic raw dataset in the paper's published shape (no ``question_id``, no kept flags,
so the verdict filter runs inside the builder, as for a published dataset; ``--kept-flags``
adds the reflect stage's ``reflection_kept`` column instead): Q questions x 4
prompt variants x 4 samples = 16 completions per question, 4 reflections per completion,
about 40% of completions correct and 70% of verdicts agreeing with the verifier. The timed
part is ``rows_from_table`` (arrow -> Python lists) plus ``build_traces`` (filter, group,
select, render, shuffle) plus ``TraceResult.table`` (the arrow table the stage writes);
generating the synthetic data is not timed.

Each size runs in its own child process, so the peak resident memory it reports (the
high-water mark of that process, input data included) is its own; "build" is the peak
minus the resident memory just before building. Rows/s and MB should stay about constant
per question between the two sizes: the builder is linear in its input.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("original", "plan_and_execute", "alternatively", "rephrase")


def synthetic_table(questions: int, samples_per_variant: int = 4, reflections: int = 4, seed: int = 0,
                    kept_flags: bool = False):
    """A raw table in the paper's column names, built deterministically from ``seed``."""
    import random

    import pyarrow as pa

    from skill_factory import rawdata as rd

    rng = random.Random(seed)
    cols: dict[str, list] = {rd.QUESTION: [], rd.ANSWER: [], rd.PROMPT_VARIANT: [], rd.COMPLETION: [],
                             rd.IS_CORRECT: [], rd.EXTRACTED: [], rd.REFLECTIONS: [], rd.REFLECTION_KEPT: []}
    for q in range(questions):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 99)
        target = a * b + c
        question = (f"Using the numbers in the list [{a}, {b}, {c}], create an equation that equals {target}. "
                    f"Each number can only be used once (question {q}).")
        for variant in VARIANTS:
            for _ in range(samples_per_variant):
                correct = rng.random() < 0.4
                expr = f"({a} * {b}) + {c}" if correct else f"({a} + {b}) * {c}"
                text = (f"First, {a} * {b} = {a * b}. Then I add {c} to reach the target. Let me check: "
                        f"{a * b} + {c} = {a * b + c}. Every number is used once.\n<answer>{expr}</answer>")
                refl, kept = [], []
                for _ in range(reflections):
                    agree = rng.random() < 0.7
                    kept.append(agree)
                    says = correct if agree else not correct
                    refl.append(f"Recomputing {expr}: each number appears once and the operations are allowed. "
                                f"<verdict>{'Correct' if says else 'Incorrect'}</verdict>")
                cols[rd.QUESTION].append(question)
                cols[rd.ANSWER].append(str(target))
                cols[rd.PROMPT_VARIANT].append(variant)
                cols[rd.COMPLETION].append(text)
                cols[rd.IS_CORRECT].append([correct])
                cols[rd.EXTRACTED].append([expr])
                cols[rd.REFLECTIONS].append(refl)
                cols[rd.REFLECTION_KEPT].append(kept)
    if not kept_flags:
        del cols[rd.REFLECTION_KEPT]
    return pa.table(cols)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(questions: int, formats: list[str], n_samples: int, kept_flags: bool) -> dict:
    from omegaconf import OmegaConf

    from skill_factory.tracebuild import (
        PhrasePools,
        TraceOptions,
        build_traces,
        rows_from_table,
    )

    table = synthetic_table(questions, kept_flags=kept_flags)
    phrases = PhrasePools.from_config(OmegaConf.load(REPO / "conf" / "phrases" / "default.yaml"))
    options = TraceOptions(formats=tuple(formats), n_samples=n_samples, seed=0)
    before = _rss_mb()
    start = time.perf_counter()
    result = build_traces(rows_from_table(table), options, phrases)
    out = result.table()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"questions": questions, "completions": table.num_rows, "rows": out.num_rows, "seconds": seconds,
            "rows_per_s": out.num_rows / seconds, "completions_per_s": table.num_rows / seconds,
            "peak_rss_mb": peak, "build_mb": peak - before,
            "skipped": {f: s["skipped_questions"] for f, s in result.stats["formats"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=8000, help="the small size; the large one is 10x")
    parser.add_argument("--formats", nargs="+", default=["*C_full"])
    parser.add_argument("--n-samples", type=int, default=5)
    parser.add_argument("--kept-flags", action="store_true", help="input carries reflection_kept flags")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.formats, args.n_samples, args.kept_flags)))
        return
    results = []
    for q in (args.questions, 10 * args.questions):
        proc = subprocess.run([sys.executable, __file__, "--child", str(q), "--n-samples", str(args.n_samples),
                               *(["--kept-flags"] if args.kept_flags else []), "--formats", *args.formats],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    keep = "reflection_kept flags" if args.kept_flags else "verdict filter in the builder"
    print(f"formats={args.formats} N={args.n_samples}; 16 completions x 4 reflections per question; {keep}")
    print(f"{'questions':>10} {'completions':>12} {'rows':>9} {'wall s':>8} {'rows/s':>9} "
          f"{'compl/s':>10} {'peak MB':>9} {'build MB':>9}")
    for r in results:
        print(f"{r['questions']:>10,} {r['completions']:>12,} {r['rows']:>9,} {r['seconds']:>8.2f} "
              f"{r['rows_per_s']:>9,.0f} {r['completions_per_s']:>10,.0f} {r['peak_rss_mb']:>9,.0f} "
              f"{r['build_mb']:>9,.0f}")
    small, large = results
    print(f"10x input -> {large['seconds'] / small['seconds']:.1f}x time, "
          f"{large['build_mb'] / max(small['build_mb'], 1e-9):.1f}x build memory")
    print("skipped questions (small):", json.dumps(small["skipped"]))


if __name__ == "__main__":
    main()
