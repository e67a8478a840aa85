"""bootstrap: build the embedded tiny Countdown model (only when ``model.bootstrap`` is set).

    skillfactory stages=[bootstrap]            # build (or reuse) the default tiny model

Why: no model can be downloaded here, and a random model never answers correctly, so every
later stage would have nothing to work with. This stage trains a ~0.5M-parameter Llama
model from scratch on CPU, from the project's own Countdown solver, until its samples are
sometimes right and sometimes wrong and its reflections sometimes misjudge them. Its
artifact ``model/`` is an ordinary Hugging Face folder; later stages load it through
``skill_factory.models.base_model_path`` exactly like a hub model.

The manifest records the quality bar measured on held-out questions (targets never
trained on): sampled accuracy at T=1, share of questions with both right and wrong samples,
well-formed rate, 4- vs 3-number accuracy, and verdict accuracy on its own answers.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile

from skill_factory.models import BOOTSTRAP_MODEL_DIR
from skill_factory.pipeline import stage

log = logging.getLogger(__name__)

# (metric path in the quality dict, lowest, highest) the default recipe must meet
QUALITY_BAR = (
    ("n3.sampled_accuracy", 0.30, 0.70),
    ("n3.mixed_question_rate", 0.50, 1.00),
    ("n3.well_formed_rate", 0.95, 1.00),
    ("verdict_accuracy", 0.60, 0.90),
)


def quality_bar(quality: dict) -> dict:
    """Each criterion with its value and whether it is met."""
    out = {}
    for path, low, high in QUALITY_BAR:
        node = quality
        for part in path.split("."):
            node = node[part]
        out[path] = {"value": round(node, 4), "range": [low, high], "ok": low <= node <= high}
    n3, n4 = quality["n3"]["sampled_accuracy"], quality["n4"]["sampled_accuracy"]
    out["n4_below_n3"] = {"value": round(n4, 4), "range": [0.0, round(0.75 * n3, 4)],
                          "ok": n4 <= 0.75 * n3}
    return out


def _check(cfg, problems) -> None:
    bc = cfg.model.bootstrap
    if bc is None:
        return
    if bc.num_heads < 1 or bc.hidden_size % bc.num_heads or bc.hidden_size // bc.num_heads < 32:
        problems.add("model.bootstrap.num_heads",
                     f"hidden_size {bc.hidden_size} / num_heads {bc.num_heads} must be a whole number >= 32",
                     "e.g. hidden_size=128 with num_heads=4")
    for key in ("wrong_answer_rate", "four_number_rate", "check_share", "verdict_noise"):
        value = getattr(bc, key)
        if not 0 <= value < 1:
            problems.add(f"model.bootstrap.{key}", f"must be in [0, 1), got {value}", "use e.g. 0.1")
    for key in ("steps", "batch_size", "eval_questions", "eval_samples", "torch_threads"):
        if getattr(bc, key) < 1:
            problems.add(f"model.bootstrap.{key}", f"must be >= 1, got {getattr(bc, key)}", "use a positive value")
    for key, zero in (("check_steps", "skip the checks"), ("rare_number_min_count", "keep embeddings as trained")):
        if getattr(bc, key) < 0:
            problems.add(f"model.bootstrap.{key}", f"must be >= 0, got {getattr(bc, key)}", f"use 0 to {zero}")
    for key in ("learning_rate", "check_learning_rate"):
        if getattr(bc, key) <= 0:
            problems.add(f"model.bootstrap.{key}", "must be > 0", "use e.g. 3e-3")
    unknown = sorted(set(bc.step_form_variants) - set(cfg.prompts.variants))
    if unknown:
        problems.add("model.bootstrap.step_form_variants", f"not prompt variants of prompts: {unknown}",
                     f"use some of {sorted(cfg.prompts.variants)}")


@stage("bootstrap", config=("model.bootstrap", "prompts", "phrases"), check=_check)
def bootstrap(ctx):
    from skill_factory.tinylm.build import build_tiny_model

    bc = ctx.cfg.model.bootstrap
    if bc is None:
        from skill_factory.errors import SkillFactoryError

        raise SkillFactoryError(f"stages: model '{ctx.cfg.model.name}' is not built by this project "
                                "(model.bootstrap is null); remove bootstrap from stages")
    # the traces stage writes these phrases between samples: the tokenizer learns their words
    # so SFT traces (and what the model writes after SFT) are words, not characters
    phrases = [p for pool in dataclasses.asdict(ctx.cfg.phrases).values() for p in pool]
    with tempfile.TemporaryDirectory(prefix="sf-bootstrap-") as scratch:
        stats = build_tiny_model(bc, ctx.cfg.prompts, ctx.cfg.model, ctx.out_dir / BOOTSTRAP_MODEL_DIR,
                                 scratch=scratch, extra_texts=phrases)
    stats["quality_bar"] = bar = quality_bar(stats["quality"])
    missed = [k for k, v in bar.items() if not v["ok"]]
    if missed:
        log.warning("bootstrap: the tiny model misses the quality bar on %s: %s", ", ".join(missed),
                    {k: bar[k]["value"] for k in missed})
    else:
        log.info("bootstrap: quality bar met: %s", {k: v["value"] for k, v in bar.items()})
    return stats
