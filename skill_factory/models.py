"""Where the base model comes from: a hub id / local path, or the bootstrap stage.

Why one place: every stage that loads the base model (sample, reflect, sft, eval) must agree
on it, and must depend on the bootstrap artifact exactly when the model is built by this
project (``model.bootstrap`` set, ``model.path`` null). Nothing downstream special-cases the
tiny model beyond this.
"""
from __future__ import annotations

from pathlib import Path

from skill_factory.errors import SkillFactoryError

# Inside a bootstrap artifact, the Hugging Face model + tokenizer folder.
BOOTSTRAP_MODEL_DIR = "model"


def builds_model(cfg) -> bool:
    return cfg.model.path is None and cfg.model.bootstrap is not None


def model_upstream(cfg) -> tuple[str, ...]:
    """Upstream stages needed to obtain the base model."""
    return ("bootstrap",) if builds_model(cfg) else ()


def base_model_path(cfg, inputs) -> str:
    """Hub id or local directory of the base model for a stage with ``inputs``."""
    if cfg.model.path is not None:
        return cfg.model.path
    if "bootstrap" in inputs:
        return str(Path(inputs["bootstrap"].path) / BOOTSTRAP_MODEL_DIR)
    raise SkillFactoryError(
        f"model.path: model '{cfg.model.name}' has no path and is not built by the bootstrap "
        "stage; set model.path to a hub id or a local directory")


def check_model(cfg, problems) -> None:
    """Stage check hook for stages that load the base model."""
    if cfg.model.path is None and cfg.model.bootstrap is None:
        problems.add("model.path", f"model '{cfg.model.name}' has neither a path nor a bootstrap recipe",
                     "set model.path to a hub id or a local model directory")


def trained_checkpoint(artifact, missing_hint: str = "") -> str:
    """The model folder a training stage (sft, rl, or a plugin's) recorded in its manifest
    counts: ``checkpoint_dir`` (relative to the artifact) or ``checkpoint`` (a path).

    A dry run holds no checkpoint, and a folder deleted after the stage finished is an
    error here rather than a confusing load failure in the next stage.
    """
    stage, counts = getattr(artifact, "stage", "stage"), artifact.counts
    if counts.get("dry_run"):
        raise SkillFactoryError(f"{stage}: the {stage} artifact {artifact.path} is a dry run and holds no "
                                f"checkpoint (fix: run the {stage} stage with {stage}.dry_run=false)")
    rel, absolute = counts.get("checkpoint_dir"), counts.get("checkpoint")
    if rel is None and absolute is None:
        raise SkillFactoryError(f"{stage}: the manifest of {artifact.path} names no checkpoint{missing_hint}")
    path = Path(artifact.path) / rel if rel is not None else Path(absolute)
    if not path.is_dir():
        raise SkillFactoryError(f"{stage}: checkpoint {path} is missing (the artifact was changed after it finished)")
    return str(path)
