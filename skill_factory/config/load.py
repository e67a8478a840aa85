"""Turn the composed Hydra config into typed objects, once, at the entrypoint.

Why here: the library never reads a DictConfig. Missing required values (``???``) and
broken interpolations are reported together as one ``ConfigError`` naming each dotted
key, instead of the first one surfacing deep inside a stage.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from skill_factory.config.problems import Problems
from skill_factory.config.schema import SkillFactoryConfig


def to_typed(cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> SkillFactoryConfig:
    """Resolve, check for missing values and convert to ``SkillFactoryConfig``.

    Relative paths under ``paths`` are made absolute against the current directory (the
    directory the user launched from: Hydra is configured not to change it), and
    ``paths.run_dir`` defaults to Hydra's output directory, passed as ``run_dir``.
    """
    problems = Problems()
    cfg = cfg.copy()
    if "hydra" in cfg:
        with open_dict(cfg):
            del cfg["hydra"]
    for key, schema in _unknown_keys(cfg):
        problems.add(key, f"not a field of {schema}",
                     "check the spelling (a '+key=' override can add keys the schema lacks)")
    for key in sorted(OmegaConf.missing_keys(cfg)):
        problems.add(key, "required value is missing (???)",
                     f"set it on the command line ({key}=...) or in a config file")
    problems.raise_if_any()
    try:
        OmegaConf.resolve(cfg)
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        problems.add(str(key), str(exc).splitlines()[0], "fix the value or the interpolation")
        problems.raise_if_any()
    assert isinstance(typed, SkillFactoryConfig)
    paths = typed.paths
    paths.home = _absolute(paths.home)
    paths.artifacts = _absolute(paths.artifacts)
    paths.runs = _absolute(paths.runs)
    if paths.run_dir is None and run_dir is not None:
        paths.run_dir = str(run_dir)
    if paths.run_dir is not None:
        paths.run_dir = _absolute(paths.run_dir)
    return typed


def _unknown_keys(node: DictConfig, prefix: str = "") -> list[tuple[str, str]]:
    """Keys added past a structured schema (Hydra's ``+key=value`` opens the struct)."""
    out = []
    schema = OmegaConf.get_type(node)
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        full = f"{prefix}{key}"
        if fields is not None and key not in fields:
            out.append((full, schema.__name__))
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out += _unknown_keys(child, full + ".")
    return out


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())
