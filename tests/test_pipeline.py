"""The stage runner: cache hits, fingerprints, resume, locking, manifests."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

import fixture_stages  # noqa: F401 - registers the 'numbers' and 'total' stages
from skill_factory.config.validate import validate
from skill_factory.errors import SkillFactoryError
from skill_factory.pipeline import MANIFEST, REGISTRY, Runner, plan, stage

STAGES = {name: REGISTRY[name] for name in ("numbers", "total")}


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("SF_TEST_LEDGER", str(path))
    for var in ("SF_TEST_CRASH_AFTER_SHARD", "SF_TEST_FAIL_SEED", "SF_TEST_SLEEP"):
        monkeypatch.delenv(var, raising=False)
    return lambda: path.read_text().splitlines() if path.exists() else []


def run(cfg):
    runner = Runner(cfg, Path(cfg.paths.artifacts), registry=STAGES)
    return runner.run(), runner


def test_plan_adds_upstream_in_order(make_cfg):
    cfg = make_cfg("stages=[total]")
    assert plan(cfg, STAGES) == ["numbers", "total"]


def test_plan_rejects_unknown_and_cycles(make_cfg):
    cfg = make_cfg("stages=[total]")
    with pytest.raises(SkillFactoryError, match="unknown stage 'numbers' \\(needed by total\\)"):
        plan(cfg, {"total": STAGES["total"]})
    a = stage("a", config=(), upstream=("b",))(lambda ctx: None)
    b = stage("b", config=(), upstream=("a",))(lambda ctx: None)
    cyc = {"a": REGISTRY.pop("a"), "b": REGISTRY.pop("b")}
    cfg = make_cfg("stages=[a]")
    with pytest.raises(SkillFactoryError, match="cycle"):
        plan(cfg, cyc)
    assert a and b


def test_second_run_is_a_cache_hit(make_cfg, ledger):
    cfg = make_cfg("stages=[total]", "sample.n=3")
    arts, runner = run(cfg)
    assert json.loads((arts["total"].path / "total.json").read_text()) == 6
    assert ledger() == ["numbers shard 0", "numbers shard 1", "numbers shard 2", "total"]
    assert {k: v["status"] for k, v in runner.record.entries.items()} == {
        "numbers": "produced", "total": "produced"}

    arts2, runner2 = run(cfg)
    assert len(ledger()) == 4  # no stage work the second time
    assert {k: v["status"] for k, v in runner2.record.entries.items()} == {
        "numbers": "cached", "total": "cached"}
    assert arts2["total"].path == arts["total"].path


def test_downstream_change_reuses_upstream_and_upstream_change_propagates(make_cfg, ledger):
    base, _ = run(make_cfg("stages=[total]", "sample.n=2"))
    down, _ = run(make_cfg("stages=[total]", "sample.n=2", "traces.repeats=3"))
    assert down["numbers"].path == base["numbers"].path
    assert down["total"].fingerprint != base["total"].fingerprint
    assert ledger().count("numbers shard 0") == 1

    up, _ = run(make_cfg("stages=[total]", "sample.n=2", "seed=5"))
    assert up["numbers"].fingerprint != base["numbers"].fingerprint
    # total's own slice is unchanged, but its upstream fingerprint moved
    assert up["total"].fingerprint != base["total"].fingerprint
    assert up["total"].manifest["upstream"]["numbers"]["fingerprint"] == up["numbers"].fingerprint


def test_unrelated_setting_does_not_change_fingerprints(make_cfg, ledger):
    a, _ = run(make_cfg("stages=[total]", "sample.n=2"))
    b, _ = run(make_cfg("stages=[total]", "sample.n=2", "sft.learning_rate=0.5"))
    assert a["total"].fingerprint == b["total"].fingerprint


def test_resume_after_crash_mid_stage(make_cfg, ledger, monkeypatch):
    cfg = make_cfg("stages=[numbers]", "sample.n=4")
    monkeypatch.setenv("SF_TEST_CRASH_AFTER_SHARD", "1")
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(cfg)
    out = next(Path(cfg.paths.artifacts, "numbers").iterdir())
    assert not (out / MANIFEST).exists()  # unfinished: no manifest
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-000.json", "shard-001.json"]

    monkeypatch.delenv("SF_TEST_CRASH_AFTER_SHARD")
    arts, runner = run(cfg)
    assert runner.record.entries["numbers"]["status"] == "resumed"
    assert ledger() == ["numbers shard 0", "numbers shard 1", "numbers shard 2", "numbers shard 3"]
    assert (arts["numbers"].path / MANIFEST).exists()


def test_unfinished_non_resumable_stage_starts_over(make_cfg, ledger):
    cfg = make_cfg("stages=[total]", "sample.n=1")
    arts, _ = run(cfg)
    out = arts["total"].path
    (out / MANIFEST).unlink()
    (out / "stale.tmp").write_text("left by a killed run")
    _, runner = run(cfg)
    assert runner.record.entries["total"]["status"] == "produced"
    assert not (out / "stale.tmp").exists()
    assert ledger().count("total") == 2


def test_user_error_leaves_no_partial_artifact(make_cfg, ledger, monkeypatch):
    monkeypatch.setenv("SF_TEST_FAIL_SEED", "0")
    cfg = make_cfg("stages=[total]", "sample.n=1")
    with pytest.raises(SkillFactoryError, match="configured to fail"):
        run(cfg)
    assert list(Path(cfg.paths.artifacts, "total").iterdir()) == [] or all(
        p.suffix == ".lock" for p in Path(cfg.paths.artifacts, "total").iterdir())


def test_manifest_contents_and_no_credentials(make_cfg, ledger, monkeypatch):
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "A" * 34)
    cfg = make_cfg("stages=[total]", "sample.n=2")
    arts, runner = run(cfg)
    m = json.loads((arts["total"].path / MANIFEST).read_text())
    assert set(m) >= {"stage", "fingerprint", "version", "config", "upstream", "counts",
                      "packages", "git_revision", "wall_time_s", "finished_at"}
    assert m["config"] == {"traces.repeats": 1}
    assert m["counts"] == {"total": 3}
    assert "transformers" in m["packages"] and "hydra-core" in m["packages"]
    assert not list(arts["total"].path.glob(".*.tmp"))
    record = runner.write_record(Path(cfg.paths.run_dir))
    for path in [*Path(cfg.paths.artifacts).rglob("*.json"), record]:
        text = path.read_text()
        assert secret not in text and "hf_AAAA" not in text


def test_scrub_redacts_secret_keys_and_values(monkeypatch):
    from skill_factory.provenance import REDACTED, scrub

    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    out = scrub({"api_key": "abc", "path": "hf_" + "x" * 30, "note": "key " + "f" * 40,
                 "nested": [{"token": "t"}], "n": 3})
    assert out == {"api_key": REDACTED, "path": REDACTED, "note": f"key {REDACTED}",
                   "nested": [{"token": REDACTED}], "n": 3}


def _producer(cfg, queue):
    os.environ["SF_TEST_SLEEP"] = "0.3"
    arts, runner = run(cfg)
    queue.put((str(arts["numbers"].path), runner.record.entries["numbers"]["status"]))


def test_concurrent_producers_wait_and_reuse(make_cfg, ledger):
    cfg = make_cfg("stages=[numbers]", "sample.n=3")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_producer, args=(cfg, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert len({path for path, _ in results}) == 1
    assert sorted(status for _, status in results) == ["cached", "cached", "produced"]
    assert ledger() == ["numbers shard 0", "numbers shard 1", "numbers shard 2"]


def test_stage_checks_run_only_for_planned_stages(make_cfg):
    calls = []

    def check(cfg, problems):
        calls.append(cfg.stages)
        problems.add("sample.n", "checked by the stage", "n/a")

    reg = dict(STAGES)
    reg["checked"] = stage("checked", config=(), check=check)(lambda ctx: None) and REGISTRY.pop("checked")
    validate(make_cfg("stages=[total]"), registry=reg)
    assert calls == []
    with pytest.raises(Exception, match="checked by the stage"):
        validate(make_cfg("stages=[checked]"), registry=reg)
