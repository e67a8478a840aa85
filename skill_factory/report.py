"""``skillfactory-report``: compare the evaluation results of several runs in one table and plot.

    skillfactory-report outputs/runs/2026-01-01/10-00-00 outputs/runs/2026-01-01/11-00-00
    skillfactory-report outputs/runs/multirun/2026-01-01/12-00-00      # every job of a sweep
    skillfactory-report RUN_A RUN_B --labels sft,rl --decoding greedy --out report/
    python -m skill_factory.report RUN_A RUN_B                           # same, without the script

Each argument is a run directory holding the eval stage's ``results.json`` (the stage writes
it there), an eval artifact directory, a ``results.json`` file, or a folder of such runs (a
Hydra multirun folder: its numbered job directories are taken in order). Runs are labelled
by ``--labels``, else by the overrides Hydra recorded for the job (``.hydra/overrides.yaml``) that
differ between the runs (a sweep's swept values, e.g. ``traces=no_reflection``), else by the
directory name.

Runs whose labels differ only in a ``seed=`` override are replicates of one method (a sweep
``experiment=A,B seed=0,1,2``): the report then adds a table with one row per method (the label
without ``seed=``): Countdown 3/4/5 accuracy, the budget-forcing gain (pooled accuracy at the
largest budget minus at the smallest) and the pooled skill metrics, each as mean ± standard error
over the seeds (sample std / sqrt(seeds); "± –" for a single seed; "(n=..)" when only some seeds
have the metric), and the number of seeds. It goes under the per-run tables in ``comparison.md``
and the printout, and into ``comparison.json`` under ``"_grouped"``.

Writes ``comparison.md``, ``comparison.json`` and ``accuracy_vs_numbers.png``,
``accuracy_vs_budget.png``, ``skill_usage.png`` into ``--out`` (default: the multirun folder
given, else the runs' common parent directory, else ``./report``), and prints the table.
Exit code 2 when an argument holds no results.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from skill_factory.evaluation.report import COMPARISON_MD, RESULTS_JSON, unique_labels, write_comparison

ALL_RUNS = "all runs"  # the method of runs that differ only in their seed

log = logging.getLogger("skill_factory.report")


class NoResults(Exception):
    pass


def _numbered(path: Path) -> list[Path]:
    jobs = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / RESULTS_JSON).is_file()]
    return sorted(jobs, key=lambda p: int(p.name))


def expand(paths: Sequence[str]) -> list[Path]:
    """``results.json`` files named by the arguments (multirun folders expand to their jobs)."""
    out: list[Path] = []
    for arg in paths:
        p = Path(arg).expanduser()
        if p.is_file() and p.name.endswith(".json"):
            out.append(p)
        elif (p / RESULTS_JSON).is_file():
            out.append(p / RESULTS_JSON)
        elif p.is_dir() and _numbered(p):
            out += [j / RESULTS_JSON for j in _numbered(p)]
        else:
            raise NoResults(f"{arg}: no {RESULTS_JSON} there (run the eval stage in that run, or give its "
                            "run directory, eval artifact or multirun folder)")
    return out


def overrides_of(results_file: Path) -> list[str]:
    """The command-line overrides Hydra recorded for the run ([] when there are none)."""
    path = results_file.parent / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        import yaml

        items = yaml.safe_load(path.read_text()) or []
    except Exception:  # noqa: BLE001 - a label is cosmetic; fall back to the folder name
        log.debug("unreadable %s", path, exc_info=True)
        return []
    return [str(i) for i in items if not str(i).startswith(("hydra.", "paths.", "print_config="))]


def labels_of(results_files: Sequence[Path]) -> list[str]:
    """Short labels: the overrides that differ between the runs (a sweep's swept values),
    else the run folder's name."""
    overrides = [overrides_of(f) for f in results_files]
    common = set.intersection(*(set(o) for o in overrides)) if len(overrides) > 1 else set()
    labels = []
    for f, items in zip(results_files, overrides):
        own = [i for i in items if i not in common]
        labels.append(" ".join(own) if own else f.parent.name)
    return labels


def _is_seed(item: str) -> bool:
    return item.lstrip("+~").startswith("seed=")


def method_of(label: str) -> Optional[str]:
    """The label without its ``seed=`` override (None when it has none)."""
    words = label.split(" ")
    if not any(_is_seed(w) for w in words):
        return None
    return " ".join(w for w in words if not _is_seed(w)) or ALL_RUNS


def groups_of(labels: Sequence[str], results: Sequence[Any]) -> Optional[list[tuple[str, list[Any]]]]:
    """The runs grouped by method (label without ``seed=``), in order of first appearance; None
    when no label has a ``seed=`` override or every group has a single run."""
    methods = [method_of(label) for label in labels]
    if all(m is None for m in methods):
        return None
    groups: dict[str, list[Any]] = {}
    for label, method, r in zip(labels, methods, results):
        groups.setdefault(method or label, []).append(r)
    if all(len(rs) == 1 for rs in groups.values()):
        return None
    return list(groups.items())


def default_out(args: Sequence[str], files: Sequence[Path]) -> Path:
    dirs = [Path(a).expanduser() for a in args]
    if len(dirs) == 1 and dirs[0].is_dir() and _numbered(dirs[0]):
        return dirs[0] / "report"
    parents = {f.parent.parent for f in files}
    if len(parents) == 1:
        return next(iter(parents)) / "report"
    return Path("report")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skillfactory-report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories, eval artifacts, results.json files or multirun folders")
    p.add_argument("--labels", help="comma-separated labels, one per run (default: Hydra overrides or folder names)")
    p.add_argument("--decoding", help="compare this decoding only (greedy or sampled; default: all)")
    p.add_argument("--out", help="output folder (default: the multirun folder, or the runs' common parent)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        files = expand(args.runs)
    except NoResults as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels = labels_of(files)
    if args.labels:
        given = [s.strip() for s in args.labels.split(",")]
        if len(given) != len(files):
            print(f"error: --labels has {len(given)} labels for {len(files)} runs", file=sys.stderr)
            return 2
        labels = given
    runs = [(label, json.loads(f.read_text())) for label, f in zip(unique_labels(labels), files)]
    groups = groups_of(labels, [r for _, r in runs])
    out = Path(args.out) if args.out else default_out(args.runs, files)
    written = write_comparison(runs, out, decoding=args.decoding, groups=groups)
    print((out / COMPARISON_MD).read_text())  # the table just written
    print(f"written to {out}: {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
