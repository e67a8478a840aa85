"""The entrypoint as a user runs it: reruns do nothing, multirun jobs fail independently,
the run directory records what was used, W&B works offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def cli(args, cwd, **env_extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SKILLFACTORY_", "SF_TEST_", "WANDB_"))}
    env["PYTHONPATH"] = str(TESTS)
    env["SF_TEST_LEDGER"] = str(Path(cwd) / "ledger.txt")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "skill_factory.cli", *args,
                           "plugins=[fixture_stages]"], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def ledger(cwd):
    path = Path(cwd) / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


def run_dirs(cwd):
    return sorted(p.parent for p in Path(cwd, "outputs", "runs").rglob("artifacts.json"))


def test_rerun_of_a_finished_command_does_no_stage_work(tmp_path):
    first = cli(["stages=[total]", "sample.n=2"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert ledger(tmp_path) == ["numbers shard 0", "numbers shard 1", "total"]
    second = cli(["stages=[total]", "sample.n=2", "hydra.run.dir=outputs/runs/second"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert len(ledger(tmp_path)) == 3
    log = second.stdout + second.stderr
    assert "reusing finished artifact" in log and "producing" not in log

    run_dir = tmp_path / "outputs" / "runs" / "second"
    record = json.loads((run_dir / "artifacts.json").read_text())
    assert {k: v["status"] for k, v in record.items()} == {"numbers": "cached", "total": "cached"}
    manifest = json.loads((Path(record["total"]["path"]) / "manifest.json").read_text())
    assert record["total"]["fingerprint"] == manifest["fingerprint"]
    tree = (run_dir / "config_tree.txt").read_text()
    assert "sample" in tree and "plugins" in tree and "fixture_stages" in tree
    assert (run_dir / ".hydra" / "overrides.yaml").exists()


def test_multirun_failed_job_does_not_stop_the_others(tmp_path):
    out = cli(["-m", "stages=[total]", "sample.n=1", "seed=0,1,2"], tmp_path, SF_TEST_FAIL_SEED="1")
    assert out.returncode == 1
    log = out.stdout + out.stderr
    assert "multirun job 1 failed; its output directory:" in log
    assert "1 multirun job(s) failed" in log and "seed 1 is configured to fail" in log
    assert "Traceback" not in log
    assert ledger(tmp_path).count("total") == 2  # jobs 0 and 2 finished
    assert len(run_dirs(tmp_path)) == 3  # every job recorded what it used


def test_credentials_never_reach_run_files(tmp_path):
    token = "hf_" + "Z" * 34
    out = cli(["stages=[total]", "sample.n=1"], tmp_path, HF_TOKEN=token,
              WANDB_API_KEY="e" * 40)
    assert out.returncode == 0, out.stderr
    for path in Path(tmp_path, "outputs").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert token not in text and "e" * 40 not in text, path


def test_wandb_logger_runs_offline_and_logs_fingerprints(tmp_path):
    out = cli(["stages=[total]", "sample.n=2", "logger=wandb", "logger.wandb.project=sf-test",
               "hydra.run.dir=outputs/runs/wb"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "offline mode" in out.stdout + out.stderr
    run_dir = tmp_path / "outputs" / "runs" / "wb"
    record = json.loads((run_dir / "artifacts.json").read_text())
    fp = record["total"]["fingerprint"]
    # the offline run file holds the logged records; its summary is echoed at finish
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    assert fp.encode() in run_file.read_bytes()
    log = out.stdout + out.stderr
    assert f"total/fingerprint {fp}" in log and "total/total 3" in " ".join(log.split())
