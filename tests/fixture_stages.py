"""Small real stages for exercising the runner end to end (loaded with ``plugins=[...]``).

``numbers`` writes ``sample.n`` numbers derived from the seed in shards (resumable);
``total`` sums them. Every production appends a line to ``$SF_TEST_LEDGER`` so tests can
count how often a stage really did work. ``SF_TEST_CRASH_AFTER_SHARD`` simulates a kill.
``SF_TEST_FAIL_SEED`` makes ``total`` raise for that seed (a failing multirun job).
"""
from __future__ import annotations

import json
import os
import time

from skill_factory.errors import SkillFactoryError
from skill_factory.pipeline import stage


def _ledger(line: str) -> None:
    path = os.environ.get("SF_TEST_LEDGER")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


@stage("numbers", config=("sample.n", "seed"), resumable=True)
def numbers(ctx):
    crash_after = int(os.environ.get("SF_TEST_CRASH_AFTER_SHARD", "-1"))
    n = ctx.cfg.sample.n
    for shard in range(n):
        path = ctx.out_dir / f"shard-{shard:03d}.json"
        if path.exists():
            continue
        _ledger(f"numbers shard {shard}")
        time.sleep(float(os.environ.get("SF_TEST_SLEEP", "0")))
        path.write_text(json.dumps({"value": (ctx.cfg.seed + 1) * (shard + 1)}))
        if shard == crash_after:
            raise RuntimeError(f"simulated kill after shard {shard}")
    return {"shards": n}


@stage("total", config=("traces.repeats",), upstream=("numbers",))
def total(ctx):
    if str(ctx.cfg.seed) == os.environ.get("SF_TEST_FAIL_SEED"):
        raise SkillFactoryError(f"total: seed {ctx.cfg.seed} is configured to fail")
    _ledger("total")
    src = ctx.inputs["numbers"].path
    values = [json.loads(p.read_text())["value"] for p in sorted(src.glob("shard-*.json"))]
    result = sum(values) * ctx.cfg.traces.repeats
    (ctx.out_dir / "total.json").write_text(json.dumps(result))
    return {"total": result}
