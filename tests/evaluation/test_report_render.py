"""The run report and the comparison render from a small results fixture; PNGs are real."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from skill_factory.evaluation import report

FIXTURE = Path(__file__).parent / "results_small.json"


@pytest.fixture
def results():
    return json.loads(FIXTURE.read_text())


def png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_run_markdown(results):
    md = report.run_markdown(results)
    assert md.startswith("## Evaluation: suite countdown, model rl (/runs/rl/model)")
    assert "| task | decoding | n | accuracy % ± se | pass@1 | pass@2 | pass@4 | format % | trunc. % | tokens |" in md
    assert "| countdown_2 | sampled | 4 | 91.7 ± 5.3 | 91.7 | 100.0 | 100.0 | 100.0 | 0.0 | 80.0 |" in md
    assert "| countdown_2 | greedy | 1 | 83.3 ± 16.7 | 83.3 | – | – |" in md  # pass@k > n: not reported
    assert "| **mean** | greedy |  | 43.3 |" in md
    assert "### Skill usage (greedy)" in md and "| countdown_6 | 2.00 | 2.00 | 100.0 | 50.0 | 50.0 | – |" in md
    assert "### Budget forcing (greedy)" in md and "| countdown_3 | 256 | 83.3 ± 16.7 | 268.0 | 1.00 | 0.0 |" in md
    assert md.rstrip().endswith("Skipped: gsm8k (no data: set eval.tasks.gsm8k.params.path)")


def test_write_run_report(results, tmp_path):
    files = report.write_run_report(results, tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in files)
    assert names == ["plots/accuracy_vs_budget.png", "plots/accuracy_vs_numbers.png", "plots/skill_usage.png",
                     "results.json", "results.md"]
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert all(png_ok(p) for p in files if p.suffix == ".png")
    assert not list(tmp_path.rglob(".*.tmp*"))  # atomic writes leave nothing behind


def test_plots_are_skipped_when_there_is_nothing_to_draw(results, tmp_path):
    ood = copy.deepcopy(results)
    ood["tasks"] = {"longmult_2": {**ood["tasks"]["countdown_2"], "task": "longmult", "params": {"digits": 2}}}
    ood["budget_forcing"] = {"entries": {}, "pooled": [], "decoding": None}
    files = report.run_plots(ood, tmp_path)
    assert [p.name for p in files] == ["skill_usage.png"]
    assert "Budget forcing" not in report.run_markdown(ood)


def test_comparison(results, tmp_path):
    worse = copy.deepcopy(results)
    for t in worse["tasks"].values():
        for s in t["decodings"].values():
            s["accuracy"] /= 2
    worse["overall"]["greedy"]["skills"]["samples_per_response"] = 1.0
    runs = [("sft", results), ("rl", worse), ("sft", results)]
    md = report.comparison_markdown(list(zip(report.unique_labels([r for r, _ in runs]), [x for _, x in runs])))
    assert "| task | decoding | sft | rl | sft (2) |" in md
    assert "| countdown_2 | greedy | 83.3 ± 16.7 | 41.7 ± 16.7 | 83.3 ± 16.7 |" in md
    assert "| 0 | 27.8 (12 tok) | 27.8 (12 tok) | 27.8 (12 tok) |" in md  # mean over the forced entries
    assert "| samples/resp | 2.00 | 1.00 | 2.00 |" in md
    only = report.comparison_markdown(runs[:2], decoding="sampled")
    assert "| greedy |" not in only and "| countdown_6 | sampled |" in only
    files = report.write_comparison(runs, tmp_path)
    assert sorted(p.name for p in files) == ["accuracy_vs_budget.png", "accuracy_vs_numbers.png", "comparison.json",
                                             "comparison.md", "skill_usage.png"]
    assert set(json.loads((tmp_path / "comparison.json").read_text())) == {"sft", "rl", "sft (2)"}
    assert all(png_ok(p) for p in files if p.suffix == ".png")


def test_formatting_helpers():
    assert report.pct(None) == "–" and report.pct(0.1234) == "12.3"
    assert report.num(2.0, 2) == "2.00"
    assert report.table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert report.countdown_x({"task": "countdown", "params": {"num_numbers": 5}}) == 5
    assert report.countdown_x({"task": "longmult", "params": {"digits": 2}}) is None
