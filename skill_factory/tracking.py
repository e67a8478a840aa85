"""Experiment tracking: ``logger=none`` (default) or ``logger=wandb``.

Why a thin layer: stages report counts and metrics once (they land in the manifest); the
tracker forwards them, with each artifact's fingerprint, so a W&B run says exactly which
cached data and checkpoints it used. W&B runs offline unless an API key is present in the
environment; the key is never read from or written to config.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from skill_factory.config.schema import LoggerConfig
from skill_factory.pipeline import Artifact, to_plain
from skill_factory.provenance import scrub

log = logging.getLogger(__name__)


class Tracker:
    """No-op tracker: everything still lands in manifests and the run directory."""

    def stage_done(self, art: Artifact, status: str) -> None:
        pass

    def finish(self, ok: bool) -> None:
        pass


def _flat_numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        out[prefix] = float(value)
    elif isinstance(value, (int, float)):
        out[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            _flat_numbers(f"{prefix}/{k}", v, out)


class WandbTracker(Tracker):
    def __init__(self, cfg: LoggerConfig, run_dir: Path, job_name: str, config: Any):
        import wandb

        w = cfg.wandb
        mode = w.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self._wandb = wandb
        self.run = wandb.init(
            project=w.project, entity=w.entity, group=w.group or job_name, tags=list(w.tags),
            mode=mode, dir=str(run_dir), name=Path(run_dir).name,
            config=scrub(to_plain(config)), reinit="finish_previous",
        )
        log.info("W&B run %s (%s mode) in %s", self.run.id, mode, run_dir)

    def stage_done(self, art: Artifact, status: str) -> None:
        metrics: dict[str, float] = {}
        _flat_numbers(art.stage, art.counts, metrics)
        metrics[f"{art.stage}/wall_time_s"] = art.manifest.get("wall_time_s", 0.0)
        self.run.log(metrics)
        self.run.summary[f"{art.stage}/fingerprint"] = art.fingerprint
        self.run.summary[f"{art.stage}/artifact"] = str(art.path)
        self.run.summary[f"{art.stage}/status"] = status

    def finish(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def make_tracker(cfg: LoggerConfig, run_dir: Path, job_name: str, config: Any) -> Tracker:
    if cfg.name == "wandb":
        return WandbTracker(cfg, run_dir, job_name, config)
    return Tracker()
