"""Command line for users of their own LLaMA-Factory checkout.

    python -m skill_factory.llamafactory merge-dataset-info <sft artifact dir> <LLaMA-Factory>/data/dataset_info.json
    python -m skill_factory.llamafactory merge-dataset-info <artifact> <file> --name my_traces

Adds our dataset entry (with an absolute ``file_name``) and keeps every other entry; an
existing *different* entry of the same name is refused, never overwritten. Then train from
the checkout with ``dataset: <name>`` in your yaml (the artifact's ``train.yaml`` is a start).
"""
from __future__ import annotations

import argparse
import sys

from skill_factory.errors import SkillFactoryError
from skill_factory.llamafactory.emit import merge_dataset_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skill_factory.llamafactory",
                                     description="LLaMA-Factory helpers of skill-factory")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge-dataset-info", help="merge our dataset entry into a dataset_info.json")
    merge.add_argument("source", help="an sft stage artifact directory, or its dataset_info.json")
    merge.add_argument("target", help="the dataset_info.json to update (e.g. LLaMA-Factory/data/dataset_info.json)")
    merge.add_argument("--name", help="entry name to use (default: the artifact's, skillfactory_sft)")
    args = parser.parse_args(argv)
    try:
        name, status = merge_dataset_info(args.source, args.target, args.name)
    except SkillFactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "added to" if status == "added" else "already in"
    print(f"dataset '{name}' {verb} {args.target}; train with `dataset: {name}` in your yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
