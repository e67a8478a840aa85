"""Reports of evaluation results: ``results.json``, a markdown table and PNG plots.

    write_run_report(results, run_dir)            # results.json, results.md, plots/*.png
    text = run_markdown(results)
    write_comparison([("sft", r1), ("rl", r2)], out_dir)   # several runs in one table and plot
    write_comparison(runs, out_dir, groups=[("sft", [r1, r3]), ("rl", [r2, r4])])  # + mean ± s.e. over seeds

Why plain files: a run directory, an artifact or a sweep folder must say what the model
scored without any service; W&B gets the same numbers and images when it is enabled (the
eval stage logs them). The plots are the paper's views: accuracy against the number of
Countdown numbers (generalisation to harder problems), accuracy against the tokens used
under budget forcing, and bars of skill usage.

Plots are drawn on ``matplotlib.figure.Figure`` objects directly (no ``pyplot``), so nothing
here touches matplotlib's global backend or state, and matplotlib is imported only when a
plot is drawn.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOTS_DIR = "plots"
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"

# skill-usage rates drawn as bars (all in [0, 1]) and their short labels
SKILL_RATES = (
    ("multi_sample_rate", ">=2 samples"),
    ("verdict_accuracy", "verdict acc."),
    ("retry_after_incorrect", "retry after wrong"),
    ("stop_after_correct", "stop after right"),
    ("inner_accuracy", "inner acc."),
    ("final_accuracy", "final acc."),
)
SKILL_COLUMNS = (
    ("samples_per_response", "samples/resp"),
    ("reflections_per_response", "reflects/resp"),
    *SKILL_RATES[:4],
    ("any_inner_correct_rate", "any inner right"),
    *SKILL_RATES[4:],
)


# --- formatting -------------------------------------------------------------------------------

def pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def num(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def countdown_x(entry: Mapping[str, Any]) -> Optional[int]:
    """The number of Countdown numbers of a suite entry (None for other tasks)."""
    if entry.get("task") != "countdown":
        return None
    value = entry.get("params", {}).get("num_numbers")
    return int(value) if value is not None else None


def decodings_of(results: Mapping[str, Any]) -> list[str]:
    seen: list[str] = []
    for t in results.get("tasks", {}).values():
        for d in t["decodings"]:
            if d not in seen:
                seen.append(d)
    return seen


def main_decoding(results: Mapping[str, Any]) -> Optional[str]:
    decs = decodings_of(results)
    return "greedy" if "greedy" in decs else (decs[0] if decs else None)


# --- one run ------------------------------------------------------------------------------------

def run_markdown(results: Mapping[str, Any]) -> str:
    """The markdown report of one run: accuracy, skill usage, budget forcing."""
    run = results.get("run", {})
    title = f"## Evaluation: suite {run.get('suite', '?')}, model {run.get('model', '?')}"
    if run.get("model_path") and run.get("model_path") != run.get("model"):
        title += f" ({run['model_path']})"
    out = [title, ""]
    ks = sorted({int(k) for t in results.get("tasks", {}).values() for s in t["decodings"].values()
                 for k in s["pass_at_k"]})
    header = ["task", "decoding", "n", "accuracy % ± se", *[f"pass@{k}" for k in ks], "format %", "trunc. %",
              "tokens"]
    rows = []
    for key, t in results.get("tasks", {}).items():
        for dec, s in t["decodings"].items():
            rows.append([key, dec, s["n"], f"{pct(s['accuracy'])} ± {pct(s['stderr'])}",
                         *[pct(s["pass_at_k"].get(str(k))) for k in ks], pct(s["format_rate"]),
                         pct(s.get("truncated_rate")), num(s["mean_tokens"])])
    for dec, o in results.get("overall", {}).items():
        rows.append(["**mean**", dec, "", pct(o["mean_accuracy"]), *["" for _ in ks], "", "", num(o["mean_tokens"])])
    out.append(table(header, rows))
    dec = main_decoding(results)
    if dec is not None:
        out += ["", f"### Skill usage ({dec})", ""]
        rows = []
        for key, t in results.get("tasks", {}).items():
            s = t["decodings"].get(dec)
            if s is not None:
                rows.append([key, *_skill_cells(s["skills"])])
        o = results.get("overall", {}).get(dec)
        if o is not None:
            rows.append(["**all**", *_skill_cells(o["skills"])])
        out.append(table(["task", *[label for _, label in SKILL_COLUMNS]], rows))
    bf = results.get("budget_forcing", {})
    if bf.get("entries"):
        out += ["", f"### Budget forcing ({bf.get('decoding') or 'greedy'})", ""]
        rows = []
        for key, b in bf["entries"].items():
            for p in b["points"]:
                rows.append([key, p["budget"], f"{pct(p['accuracy'])} ± {pct(p['stderr'])}", num(p["mean_tokens"]),
                             num(p["mean_rounds"], 2), pct(p["forced_rate"])])
        out.append(table(["task", "budget", "accuracy % ± se", "tokens", "rounds", "forced %"], rows))
    if results.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items())]
    return "\n".join(out) + "\n"


def _skill_cells(s: Mapping[str, Any]) -> list[str]:
    return [num(s.get(k), 2) if k.endswith("per_response") else pct(s.get(k)) for k, _ in SKILL_COLUMNS]


def write_run_report(results: Mapping[str, Any], out_dir: str | os.PathLike, plots: bool = True) -> list[Path]:
    """Write results.json, results.md and the plots into ``out_dir``; return the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [_write(out / RESULTS_JSON, json.dumps(results, indent=2, sort_keys=True) + "\n"),
             _write(out / RESULTS_MD, run_markdown(results))]
    if plots:
        files += run_plots(results, out / PLOTS_DIR)
    return files


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# --- plots --------------------------------------------------------------------------------------

def _figure(width: float = 6.0, height: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _countdown_series(results: Mapping[str, Any], decoding: str) -> tuple[list[int], list[float], list[float]]:
    pts = []
    for t in results.get("tasks", {}).values():
        x = countdown_x(t)
        s = t["decodings"].get(decoding)
        if x is not None and s is not None:
            pts.append((x, s["accuracy"], s["stderr"]))
    pts.sort()
    return [p[0] for p in pts], [100 * p[1] for p in pts], [100 * p[2] for p in pts]


def plot_accuracy_vs_numbers(series: Sequence[tuple[str, Mapping[str, Any], str]], path: Path) -> Optional[Path]:
    """Accuracy against the number of Countdown numbers; one line per (label, results, decoding)."""
    lines = [(label, *_countdown_series(r, dec)) for label, r, dec in series]
    lines = [line for line in lines if line[1]]
    if not lines:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for label, xs, ys, es in lines:
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    ax.set_xlabel("numbers in the Countdown problem")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(sorted({x for _, xs, _, _ in lines for x in xs}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Countdown accuracy by difficulty")
    return _save(fig, path)


def plot_accuracy_vs_budget(curves: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], path: Path) -> Optional[Path]:
    """Budget forcing, one curve per label: accuracy against the budget (left; budgets evenly
    spaced) and against the mean tokens the responses actually used (right)."""
    curves = [(label, sorted(pts, key=lambda p: p["budget"])) for label, pts in curves if pts]
    if not curves:
        return None
    budgets = sorted({p["budget"] for _, pts in curves for p in pts})
    position = {b: i for i, b in enumerate(budgets)}
    fig = _figure(10.0, 4.0)
    ax_budget, ax_tokens = fig.subplots(1, 2)
    for label, pts in curves:
        ys = [100 * p["accuracy"] for p in pts]
        errs = [100 * p["stderr"] for p in pts] if all("stderr" in p for p in pts) else None
        ax_budget.errorbar([position[p["budget"]] for p in pts], ys, yerr=errs, marker="o", capsize=3, label=label)
        ax_tokens.plot([p["mean_tokens"] for p in pts], ys, marker="o", label=label)
    ax_budget.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax_budget.set_xlabel("thinking-token budget")
    ax_tokens.set_xlabel("tokens used (mean per response, forced answer included)")
    for ax in (ax_budget, ax_tokens):
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    ax_budget.legend(fontsize=8)
    fig.suptitle("Budget forcing")
    return _save(fig, path)


def plot_skill_bars(groups: Sequence[tuple[str, Mapping[str, Any]]], path: Path) -> Optional[Path]:
    """Grouped bars of skill-usage rates (and samples per response), one bar colour per group."""
    groups = [(label, s) for label, s in groups if s]
    if not groups:
        return None
    fig = _figure(9.0, 4.0)
    ax_rates, ax_counts = fig.subplots(1, 2, width_ratios=[4, 1])
    width = 0.8 / len(groups)
    for i, (label, s) in enumerate(groups):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(SKILL_RATES))]
        ys = [100 * (s.get(k) or 0.0) for k, _ in SKILL_RATES]
        ax_rates.bar(xs, ys, width=width, label=label)
        ax_counts.bar([i], [s.get("samples_per_response") or 0.0], width=0.8, label=label)
    ax_rates.set_xticks(range(len(SKILL_RATES)), [lbl for _, lbl in SKILL_RATES], rotation=30, ha="right", fontsize=8)
    ax_rates.set_ylabel("%")
    ax_rates.set_ylim(0, 105)
    ax_rates.grid(axis="y", alpha=0.3)
    ax_rates.legend(fontsize=7)
    ax_rates.set_title("Skill usage")
    ax_counts.set_xticks(range(len(groups)), [label for label, _ in groups], rotation=30, ha="right", fontsize=7)
    ax_counts.set_ylim(0, max(1.0, *[(s.get("samples_per_response") or 0.0) * 1.1 for _, s in groups]))
    ax_counts.set_title("samples / response", fontsize=9)
    return _save(fig, path)


def run_plots(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """The plots of one run."""
    out_dir = Path(out_dir)
    files = []
    series = [(dec, results, dec) for dec in decodings_of(results)]
    files.append(plot_accuracy_vs_numbers(series, out_dir / "accuracy_vs_numbers.png"))
    bf = results.get("budget_forcing", {}).get("entries", {})
    files.append(plot_accuracy_vs_budget([(key, b["points"]) for key, b in bf.items()],
                                         out_dir / "accuracy_vs_budget.png"))
    dec = main_decoding(results)
    if dec is not None:
        groups = [(key, t["decodings"][dec]["skills"]) for key, t in results.get("tasks", {}).items()
                  if dec in t["decodings"]]
        files.append(plot_skill_bars(groups, out_dir / "skill_usage.png"))
    return [f for f in files if f is not None]


# --- several runs -------------------------------------------------------------------------------

def unique_labels(labels: Sequence[str]) -> list[str]:
    out, seen = [], {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def comparison_markdown(runs: Sequence[tuple[str, Mapping[str, Any]]], decoding: Optional[str] = None,
                        groups: Optional[Sequence[tuple[str, Sequence[Mapping[str, Any]]]]] = None) -> str:
    """Several runs side by side: accuracy per task, budget-forcing curve, skill usage; and, when
    ``groups`` (method, its runs' results) has a group of several runs (seeds), the table by method."""
    labels = [label for label, _ in runs]
    keys: list[str] = []
    for _, r in runs:
        keys += [k for k in r.get("tasks", {}) if k not in keys]
    decs = [decoding] if decoding else []
    if not decs:
        for _, r in runs:
            decs += [d for d in decodings_of(r) if d not in decs]
    out = ["## Comparison (accuracy % ± se)", ""]
    rows = []
    for key in keys:
        for dec in decs:
            cells = []
            for _, r in runs:
                s = r.get("tasks", {}).get(key, {}).get("decodings", {}).get(dec)
                cells.append("–" if s is None else f"{pct(s['accuracy'])} ± {pct(s['stderr'])}")
            if any(c != "–" for c in cells):
                rows.append([key, dec, *cells])
    for dec in decs:
        cells = [pct(r.get("overall", {}).get(dec, {}).get("mean_accuracy")) for _, r in runs]
        if any(c != "–" for c in cells):
            rows.append(["**mean**", dec, *cells])
    out.append(table(["task", "decoding", *labels], rows))
    budgets = sorted({p["budget"] for _, r in runs for p in r.get("budget_forcing", {}).get("pooled", [])})
    if budgets:
        out += ["", "### Budget forcing (mean accuracy % over forced entries; mean tokens)", ""]
        rows = []
        for b in budgets:
            cells = []
            for _, r in runs:
                p = next((p for p in r.get("budget_forcing", {}).get("pooled", []) if p["budget"] == b), None)
                cells.append("–" if p is None else f"{pct(p['accuracy'])} ({num(p['mean_tokens'], 0)} tok)")
            rows.append([b, *cells])
        out.append(table(["budget", *labels], rows))
    skill_rows = []
    for key, label in SKILL_COLUMNS:
        cells = []
        for _, r in runs:
            dec = decoding or main_decoding(r)
            s = r.get("overall", {}).get(dec, {}).get("skills") if dec else None
            v = None if s is None else s.get(key)
            cells.append(num(v, 2) if key.endswith("per_response") else pct(v))
        skill_rows.append([label, *cells])
    out += ["", "### Skill usage (all entries pooled)", "", table(["metric", *labels], skill_rows)]
    if _has_replicates(groups):
        out += ["", grouped_markdown(grouped_summary(groups, decoding)).rstrip("\n")]
    return "\n".join(out) + "\n"


def _has_replicates(groups: Optional[Sequence[tuple[str, Sequence[Any]]]]) -> bool:
    return bool(groups) and any(len(runs) > 1 for _, runs in groups)


def write_comparison(runs: Sequence[tuple[str, Mapping[str, Any]]], out_dir: str | os.PathLike,
                     decoding: Optional[str] = None,
                     groups: Optional[Sequence[tuple[str, Sequence[Mapping[str, Any]]]]] = None) -> list[Path]:
    """comparison.md, comparison.json (``{label: results}``; plus ``"_grouped"``: the table by
    method, when ``groups`` has a group of several runs) and the comparison plots in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(zip(unique_labels([label for label, _ in runs]), [r for _, r in runs]))
    data: dict[str, Any] = {label: r for label, r in runs}
    if _has_replicates(groups):
        data[GROUPED_KEY] = {"decoding": decoding, "methods": grouped_summary(groups, decoding)}
    files = [_write(out / COMPARISON_MD, comparison_markdown(runs, decoding, groups)),
             _write(out / COMPARISON_JSON, json.dumps(data, indent=2, sort_keys=True) + "\n")]
    series = [(label, r, decoding or main_decoding(r) or "greedy") for label, r in runs]
    plots = [plot_accuracy_vs_numbers(series, out / "accuracy_vs_numbers.png"),
             plot_accuracy_vs_budget([(label, r.get("budget_forcing", {}).get("pooled", [])) for label, r in runs],
                                     out / "accuracy_vs_budget.png"),
             plot_skill_bars([(label, r.get("overall", {}).get(dec, {}).get("skills")) for label, r, dec in series],
                             out / "skill_usage.png")]
    return files + [p for p in plots if p is not None]


# --- runs grouped by method (seeds as replicates) ---------------------------------------------

COUNTDOWN_COLUMNS = (("countdown_3", "Countdown-3 %"), ("countdown_4", "Countdown-4 %"),
                     ("countdown_5", "Countdown-5 %"))
GROUPED_KEY = "_grouped"  # the grouped table's key in comparison.json (next to the run labels)


def mean_se(values: Sequence[Optional[float]]) -> dict[str, Any]:
    """Mean and standard error (sample std / sqrt(k), ddof 1) of the values that are not None;
    ``stderr`` is None with fewer than two values, ``mean`` None with none."""
    xs = [float(v) for v in values if v is not None]
    k = len(xs)
    if not k:
        return {"mean": None, "stderr": None, "n": 0}
    m = sum(xs) / k
    se = (sum((x - m) ** 2 for x in xs) / (k - 1)) ** 0.5 / k ** 0.5 if k > 1 else None
    return {"mean": m, "stderr": se, "n": k}


def budget_gain(results: Mapping[str, Any]) -> Optional[float]:
    """Pooled budget-forcing accuracy at the largest budget minus that at the smallest (None
    with fewer than two budgets)."""
    pts = sorted(results.get("budget_forcing", {}).get("pooled", []), key=lambda p: p["budget"])
    return pts[-1]["accuracy"] - pts[0]["accuracy"] if len(pts) > 1 else None


def run_metrics(results: Mapping[str, Any], decoding: Optional[str] = None) -> dict[str, Optional[float]]:
    """The grouped table's numbers of one run: Countdown accuracies (``decoding``, else greedy
    or the first decoding), the budget-forcing gain and the pooled skill metrics."""
    dec = decoding or main_decoding(results)
    out: dict[str, Optional[float]] = {}
    for key, _ in COUNTDOWN_COLUMNS:
        s = results.get("tasks", {}).get(key, {}).get("decodings", {}).get(dec) if dec else None
        out[key] = None if s is None else s.get("accuracy")
    out["budget_forcing_gain"] = budget_gain(results)
    skills = results.get("overall", {}).get(dec, {}).get("skills") if dec else None
    for key, _ in SKILL_COLUMNS:
        out[key] = None if skills is None else skills.get(key)
    return out


def grouped_summary(groups: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                    decoding: Optional[str] = None) -> list[dict[str, Any]]:
    """One entry per group (a method; its runs are seeds): ``seeds`` and, per metric, the
    ``mean``, ``stderr`` (None for one seed) and ``n`` (seeds that have the metric)."""
    out = []
    for method, runs in groups:
        per_run = [run_metrics(r, decoding) for r in runs]
        out.append({"method": method, "seeds": len(runs),
                    "metrics": {k: mean_se([m[k] for m in per_run]) for k in per_run[0]} if per_run else {}})
    return out


def _mean_se_cell(stat: Mapping[str, Any], fmt, seeds: int) -> str:
    if stat["mean"] is None:
        return "–"
    cell = f"{fmt(stat['mean'])} ± {'–' if stat['stderr'] is None else fmt(stat['stderr'])}"
    return cell if stat["n"] == seeds else f"{cell} (n={stat['n']})"


def grouped_markdown(summary: Sequence[Mapping[str, Any]]) -> str:
    """The grouped table: one row per method, mean ± s.e. over its seeds ("± –" for one seed)."""
    header = ["method", "seeds", *[label for _, label in COUNTDOWN_COLUMNS], "budget-forcing gain (pts)",
              *[label if k.endswith("per_response") else f"{label} %" for k, label in SKILL_COLUMNS]]
    rows = []
    for g in summary:
        m, k = g["metrics"], g["seeds"]
        rows.append([g["method"], k, *[_mean_se_cell(m[c], pct, k) for c, _ in COUNTDOWN_COLUMNS],
                     _mean_se_cell(m["budget_forcing_gain"], pct, k),
                     *[_mean_se_cell(m[c], (lambda x: num(x, 2)) if c.endswith("per_response") else pct, k)
                       for c, _ in SKILL_COLUMNS]])
    return "\n".join(["### By method (mean ± s.e. over seeds; s.e. = sample std / √seeds, – for one seed)", "",
                      table(header, rows)]) + "\n"
