"""Sweeps share upstream work through the stage cache.

A multirun's jobs share ``paths.artifacts``; a stage's artifact is keyed by the fingerprint of
its own config slice and its inputs'. So a sweep axis must change the fingerprints of the stage
that reads it and of everything downstream, and of nothing upstream: a sweep over trace formats
samples and reflects once. The default tier checks that property on the fingerprints the runner
would compute for every sweep axis the README documents; the slow tier runs the issue's
trace-format sweep on the tiny model and reads each job's ``artifacts.json``.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from skill_factory.pipeline import REGISTRY, config_slice, fingerprint, plan

CHAIN = ("bootstrap", "sample", "reflect", "traces", "sft", "rl", "eval")


def planned_fingerprints(cfg) -> dict[str, str]:
    """The fingerprint of every planned stage, computed exactly as ``Runner.materialize`` does."""
    importlib.import_module("skill_factory.stages")
    fps: dict[str, str] = {}
    for name in plan(cfg):
        st = REGISTRY[name]
        upstream = {up: fps[up] for up in sorted(st.upstream_of(cfg))}
        fps[name] = fingerprint(st, config_slice(cfg, st.config_keys), upstream)
    return fps


# sweep axis -> the first stage whose artifact it changes (that stage and all after it change)
AXES = {
    "traces.formats=[no_reflection]": "traces",
    "traces.n_samples=3": "traces",
    "sft.learning_rate=3e-3": "sft",
    "rl.learning_rate=3e-5": "rl",
    "eval.temperature=0.5": "eval",
    "seed=1": "sample",
    "model.bootstrap.seed=1": "bootstrap",
}


@pytest.mark.parametrize("axis,first", AXES.items())
def test_a_sweep_axis_changes_its_stage_and_downstream_only(axis, first, make_cfg):
    if axis.startswith("eval.temperature"):
        axis = f"{axis} eval.n=2"  # sampled decoding needs n > 1
    base = planned_fingerprints(make_cfg("experiment=tiny/skillfactory"))
    swept = planned_fingerprints(make_cfg("experiment=tiny/skillfactory", *axis.split()))
    assert list(base) == list(CHAIN)
    changed = [name for name in CHAIN if base[name] != swept[name]]
    assert changed == list(CHAIN[CHAIN.index(first):]), axis


def test_launch_only_settings_change_no_artifact(make_cfg):
    """Where and how a stage runs is not what it produces: such settings reuse every artifact."""
    base = planned_fingerprints(make_cfg("experiment=tiny/skillfactory"))
    moved = planned_fingerprints(make_cfg("experiment=tiny/skillfactory", "sample.shard_size=7",
                                          "reflect.shard_size=9", "sft.cpu_threads=2",
                                          "model.generation_batch_size=17", "print_config=false"))
    assert moved == base


def test_experiments_of_one_model_and_seed_share_sample_and_reflect(make_cfg):
    """The comparison sweep (skillfactory, star, ablations) samples and reflects once."""
    fps = {name: planned_fingerprints(make_cfg(f"experiment=tiny/{name}"))
           for name in ("skillfactory", "star", "no_reflection", "no_sample_order", "no_prompt_diversity")}
    for stage in ("bootstrap", "sample", "reflect"):
        assert len({f[stage] for f in fps.values()}) == 1, stage
    assert len({f["traces"] for f in fps.values()}) == len(fps)


def test_rl_only_depends_on_no_trace_or_sft_setting(make_cfg):
    """RL from the base model plans no sample, traces or sft, and their settings leave it alone."""
    base = planned_fingerprints(make_cfg("experiment=tiny/rl_only"))
    swept = planned_fingerprints(make_cfg("experiment=tiny/rl_only", "traces.formats=[0C]", "sft.learning_rate=1e-2",
                                          "sample.n=2"))
    assert list(base) == ["bootstrap", "rl", "eval"]
    assert swept == base


# --- the sweep, run for real (slow tier) -------------------------------------------

def _link_finished_bootstraps(artifacts: Path) -> None:
    """Reuse the tiny model of the user's stage cache, if it has one: the bootstrap artifact is
    keyed by its recipe alone, so a finished one is exactly what the runner would build."""
    home = Path(os.environ.get("SKILLFACTORY_HOME", REPO / "outputs"))
    cache = Path(os.environ.get("SKILLFACTORY_ARTIFACTS", home / "artifacts")) / "bootstrap"
    for finished in sorted(cache.glob("*/manifest.json")):
        (artifacts / "bootstrap").mkdir(parents=True, exist_ok=True)
        (artifacts / "bootstrap" / finished.parent.name).symlink_to(finished.parent, target_is_directory=True)


@pytest.mark.slow
def test_trace_format_sweep_samples_and_reflects_once(tmp_path):
    artifacts = tmp_path / "artifacts"
    _link_finished_bootstraps(artifacts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLFACTORY_")}
    env.update(SKILLFACTORY_HOME=str(tmp_path / "home"), SKILLFACTORY_ARTIFACTS=str(artifacts))
    out = subprocess.run([sys.executable, "-m", "skill_factory.cli", "-m", "experiment=tiny/skillfactory",
                          "traces.formats=[*C_full],[no_reflection]"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600, check=False)
    assert out.returncode == 0, out.stderr[-4000:]

    jobs = sorted((tmp_path / "home" / "runs" / "multirun").glob("*/*/[0-9]*"), key=lambda p: int(p.name))
    assert [j.name for j in jobs] == ["0", "1"]
    records = [json.loads((j / "artifacts.json").read_text()) for j in jobs]
    for stage in ("sample", "reflect"):
        assert records[0][stage]["path"] == records[1][stage]["path"], stage
        # produced by the first job (or already in the cache), reused by the second
        assert records[0][stage]["status"] in ("produced", "cached")
        assert records[1][stage]["status"] == "cached", stage
        assert len(list((artifacts / stage).glob("*/manifest.json"))) == 1, stage
    for stage in ("traces", "sft", "rl", "eval"):
        assert records[0][stage]["path"] != records[1][stage]["path"], stage
    # every job's run directory records its overrides
    overrides = [yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) for j in jobs]
    assert overrides == [["experiment=tiny/skillfactory", "traces.formats=[*C_full]"],
                         ["experiment=tiny/skillfactory", "traces.formats=[no_reflection]"]]
