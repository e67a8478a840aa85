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


def make_seed_run(path: Path, cd: tuple, pooled: list, skills: dict, overrides: list) -> dict:
    """A job of a sweep with the given greedy Countdown 3/4/5 accuracies, pooled budget curve
    (budget, accuracy) and overall greedy skill metrics; returns the numbers it wrote."""
    results = json.loads(FIXTURE.read_text())
    for key, acc in zip(("countdown_3", "countdown_4", "countdown_5"), cd):
        results["tasks"][key]["decodings"]["greedy"]["accuracy"] = acc
    results["budget_forcing"]["pooled"] = [{"budget": b, "accuracy": a, "mean_tokens": 10.0 + b} for b, a in pooled]
    results["overall"]["greedy"]["skills"].update(skills)
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    (path / ".hydra").mkdir()
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return results


def mean_se(xs):
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 / len(xs) ** 0.5


def test_seeds_of_a_sweep_are_grouped_by_method(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    values = {  # method -> per seed: (cd3, cd4, cd5), pooled [(budget, acc)] (unsorted), skills
        "tiny/skillfactory": [((0.5, 0.2, 0.1), [(384, 0.40), (0, 0.30), (128, 0.35)],
                               {"samples_per_response": 3.0, "verdict_accuracy": 0.8}),
                              ((0.6, 0.1, 0.0), [(384, 0.50), (0, 0.30), (128, 0.45)],
                               {"samples_per_response": 4.0, "verdict_accuracy": 0.7}),
                              ((0.4, 0.3, 0.2), [(384, 0.20), (0, 0.25), (128, 0.30)],
                               {"samples_per_response": 2.0, "verdict_accuracy": 0.9})],
        "tiny/rl_only": [((0.3, 0.0, 0.0), [(0, 0.1), (128, 0.1), (384, 0.1)],
                          {"samples_per_response": 0.0, "verdict_accuracy": 0.5}),
                         ((0.35, 0.05, 0.0), [(0, 0.1), (128, 0.2), (384, 0.3)],
                          {"samples_per_response": 0.0, "verdict_accuracy": 0.6}),
                         ((0.25, 0.1, 0.0), [(0, 0.2), (128, 0.2), (384, 0.1)],
                          {"samples_per_response": 0.0, "verdict_accuracy": 0.4})],
    }
    job = 0
    for method, seeds in values.items():
        for seed, (cd, pooled, skills) in enumerate(seeds):
            make_seed_run(sweep / str(job), cd, pooled, skills, [f"experiment={method}", f"seed={seed}"])
            job += 1
    out_dir = tmp_path / "cmp"
    assert cli.main([str(sweep), "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    # the per-run comparison is still there, one column per job
    assert "| task | decoding | experiment=tiny/skillfactory seed=0 | experiment=tiny/skillfactory seed=1 |" in printed
    grouped = json.loads((out_dir / "comparison.json").read_text())["_grouped"]
    methods = grouped["methods"]
    assert [g["method"] for g in methods] == ["experiment=tiny/skillfactory", "experiment=tiny/rl_only"]
    md = (out_dir / "comparison.md").read_text()
    assert "### By method" in md and "### By method" in printed
    rows = [line for line in md.split("### By method")[1].splitlines() if line.startswith("| experiment=")]
    assert len(rows) == 2
    for g, (method, seeds) in zip(methods, values.items()):
        assert g["seeds"] == 3
        m = g["metrics"]
        for i, key in enumerate(("countdown_3", "countdown_4", "countdown_5")):
            mean, se = mean_se([s[0][i] for s in seeds])
            assert m[key]["mean"] == pytest.approx(mean) and m[key]["stderr"] == pytest.approx(se)
            assert m[key]["n"] == 3
        gains = [dict(s[1])[384] - dict(s[1])[0] for s in seeds]  # largest minus smallest budget
        mean, se = mean_se(gains)
        assert m["budget_forcing_gain"]["mean"] == pytest.approx(mean)
        assert m["budget_forcing_gain"]["stderr"] == pytest.approx(se)
        for key in ("samples_per_response", "verdict_accuracy"):
            mean, se = mean_se([s[2][key] for s in seeds])
            assert m[key]["mean"] == pytest.approx(mean) and m[key]["stderr"] == pytest.approx(se)
        # the markdown row: method, seeds, then the same numbers as mean ± se
        row = next(r for r in rows if r.startswith(f"| experiment={method} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "3"
        mean, se = mean_se([s[0][0] for s in seeds])
        assert cells[2] == f"{100 * mean:.1f} ± {100 * se:.1f}"
        mean, se = mean_se(gains)
        assert cells[5] == f"{100 * mean:.1f} ± {100 * se:.1f}"
        mean, se = mean_se([s[2]["samples_per_response"] for s in seeds])
        assert cells[6] == f"{mean:.2f} ± {se:.2f}"
    # hand-checked: skillfactory gains 0.10, 0.20, -0.05 -> mean 0.0833, se 0.0726
    assert methods[0]["metrics"]["budget_forcing_gain"]["mean"] == pytest.approx(0.25 / 3)
    assert methods[0]["metrics"]["budget_forcing_gain"]["stderr"] == pytest.approx(0.07264832, abs=1e-7)


def test_runs_without_a_seed_override_keep_the_old_output(tmp_path, capsys):
    from skill_factory.evaluation import report as rep

    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    make_run(sweep / "0", 1.0, overrides=["traces=default", "seed=0"])
    make_run(sweep / "1", 0.5, overrides=["traces=no_reflection", "seed=0"])  # seed is common: not a label
    out_dir = tmp_path / "cmp"
    assert cli.main([str(sweep), "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    runs = [(label, json.loads((sweep / str(i) / "results.json").read_text()))
            for i, label in enumerate(["traces=default", "traces=no_reflection"])]
    old = rep.comparison_markdown(runs)
    assert (out_dir / "comparison.md").read_text() == old and old in printed
    assert "By method" not in printed
    assert set(json.loads((out_dir / "comparison.json").read_text())) == {"traces=default", "traces=no_reflection"}
    assert cli.groups_of(["traces=default", "traces=no_reflection"], [1, 2]) is None
    # one seed per method: no replicates, no grouped table
    assert cli.groups_of(["a seed=0", "b seed=0"], [1, 2]) is None
    assert cli.groups_of(["a seed=0", "a seed=1", "b"], [1, 2, 3]) == [("a", [1, 2]), ("b", [3])]
    assert cli.groups_of(["seed=0", "seed=1"], [1, 2]) == [(cli.ALL_RUNS, [1, 2])]


def test_a_single_seed_shows_a_dash_for_its_standard_error():
    from skill_factory.evaluation import report as rep

    results = json.loads(FIXTURE.read_text())
    summary = rep.grouped_summary([("one", [results]), ("two", [results, results])])
    assert summary[0]["metrics"]["countdown_3"]["stderr"] is None
    assert summary[1]["metrics"]["countdown_3"]["stderr"] == 0.0
    md = rep.grouped_markdown(summary)
    acc = results["tasks"]["countdown_3"]["decodings"]["greedy"]["accuracy"]
    assert f"| one | 1 | {100 * acc:.1f} ± – |" in md
    assert f"| two | 2 | {100 * acc:.1f} ± 0.0 |" in md
