"""``skillfactory-report``: several runs (plain run dirs, a multirun folder) in one table and plot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from skill_factory import report as cli

FIXTURE = Path(__file__).parent / "evaluation" / "results_small.json"


def make_run(path: Path, scale: float = 1.0, overrides=None) -> Path:
    results = json.loads(FIXTURE.read_text())
    for t in results["tasks"].values():
        for s in t["decodings"].values():
            s["accuracy"] = round(s["accuracy"] * scale, 4)
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    if overrides is not None:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return path


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png") if p.stat().st_size > 2000)


def test_two_runs_in_one_table(tmp_path, capsys):
    a = make_run(tmp_path / "runs" / "sft")
    b = make_run(tmp_path / "runs" / "rl", scale=0.5)
    assert cli.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| task | decoding | sft | rl |" in out
    assert "| countdown_2 | greedy | 83.3 ± 16.7 | 41.7 ± 16.7 |" in out
    folder = tmp_path / "runs" / "report"  # the runs' common parent
    assert f"written to {folder}" in out
    assert (folder / "comparison.md").read_text().startswith("## Comparison")
    assert pngs(folder) == ["accuracy_vs_budget.png", "accuracy_vs_numbers.png", "skill_usage.png"]


def test_a_multirun_folder_is_expanded_and_labelled_by_overrides(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    make_run(sweep / "1", 0.5, overrides=["stages=[eval]", "traces=no_reflection", "print_config=false"])
    make_run(sweep / "0", 1.0, overrides=["stages=[eval]", "traces=default", "print_config=false"])
    (sweep / "2").mkdir()  # a failed job: no results, not listed
    out_dir = tmp_path / "cmp"
    assert cli.main([str(sweep), "--decoding", "greedy", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "| task | decoding | traces=default | traces=no_reflection |" in out
    assert "| sampled |" not in out
    assert pngs(out_dir) == ["accuracy_vs_budget.png", "accuracy_vs_numbers.png", "skill_usage.png"]
    assert cli.default_out([str(sweep)], cli.expand([str(sweep)])) == sweep / "report"


def test_labels_files_and_errors(tmp_path, capsys):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "x" / "b")
    assert cli.main([str(a / "results.json"), str(b), "--labels", "base,rl", "--out", str(tmp_path / "o")]) == 0
    assert "| task | decoding | base | rl |" in capsys.readouterr().out
    assert cli.main([str(a), str(b), "--labels", "only-one"]) == 2
    assert "2 runs" in capsys.readouterr().err
    assert cli.main([str(a), str(tmp_path / "nothing")]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_module_entrypoint_runs(tmp_path):
    import subprocess
    import sys

    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", 0.5)
    proc = subprocess.run([sys.executable, "-m", "skill_factory.report", str(a), str(b)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| countdown_6 | greedy |" in proc.stdout


@pytest.mark.parametrize("argv", [["--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0 and "skillfactory-report" in capsys.readouterr().out
