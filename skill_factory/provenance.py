"""What produced an artifact: package versions, git revision, and credential scrubbing.

Why: a manifest must let a researcher tell, months later, which code and engines made a
dataset or checkpoint, and it must never carry a hub or W&B token (those come from the
environment only, and a config value that looks like one is redacted before writing).
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "skill-factory",
    "torch",
    "transformers",
    "datasets",
    "tokenizers",
    "llamafactory",
    "verl",
    "trl",
    "vllm",
    "hydra-core",
    "omegaconf",
)

REDACTED = "<redacted>"
# Key names whose values are secrets whatever they look like.
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_?key|credential)", re.IGNORECASE)
# Values that look like credentials by their prefix: Hugging Face, GitHub, OpenAI-style.
_SECRET_VALUE = re.compile(r"(hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})")
# Environment variables whose values are redacted wherever they appear (a W&B key is 40
# hex digits, like a git sha, so it is recognised by value, not by shape).
SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "GITHUB_TOKEN")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of the engines that shape an artifact (absent ones omitted)."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def git_revision() -> str | None:
    """``<sha>`` or ``<sha>-dirty`` of the project checkout, or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_PROJECT_ROOT, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=_PROJECT_ROOT,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def scrub(value: Any, key: str = "") -> Any:
    """Return a copy of a JSON-like value with anything credential-like redacted."""
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, key) for v in value]
    if isinstance(value, str):
        if key and _SECRET_KEY.search(key) and value:
            return REDACTED
        return scrub_text(value)
    return value


def scrub_text(text: str) -> str:
    """Redact credential-looking substrings of free text (rendered configs, logs)."""
    for var in SECRET_ENV_VARS:
        secret = os.environ.get(var, "")
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return _SECRET_VALUE.sub(REDACTED, text)
