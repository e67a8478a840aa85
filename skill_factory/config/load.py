"""Turn the composed Hydra config into typed objects, once, at the entrypoint.

Why here: the library never reads a DictConfig. Missing required values (``???``) and
broken interpolations are reported together as one ``ConfigError`` naming each dotted
key, instead of the first one surfacing deep inside a stage.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
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


def restore_required(cfg: DictConfig, overrides: Sequence[str], config_name: str = "config") -> list[str]:
    """Set back to ``???`` every key a config file marked ``???`` that nothing after it
    supplied; return those keys. ``to_typed`` then reports them as missing.

    Why: Hydra composes by merging the files of the defaults list in order, and an OmegaConf
    merge skips a ``???`` it merges in (it keeps the value already there), so a file that makes
    a key required whose schema has a default (``sft.dataset: ???`` in
    experiment/paper/distill_byo) silently runs on that default. This replays the same order
    over the files' own text: a ``???`` makes its key required, a value in a later file or a
    command-line override (``sft.dataset=...``) supplies it. It needs the Hydra context that
    composed ``cfg`` (the ``hydra.main`` job, or ``initialize_config_dir``) and the same
    overrides.
    """
    loader = GlobalHydra.instance().config_loader()
    defaults = loader.compute_defaults_list(config_name, list(overrides), RunMode.RUN)
    sources = [s for s in loader.get_sources() if s.scheme() != "structured"]  # files, not schemas
    required: set[str] = set()
    for default in defaults.defaults:
        path, package = default.config_path, default.package or ""
        source = next((s for s in sources if path is not None and s.is_config(path)), None)
        if source is None or package.split(".")[0] == "hydra":
            continue
        prefix = f"{package}." if package else ""
        for key, missing in _leaves(source.load_config(path).config, prefix):
            if missing:
                required.add(key)
            else:
                _supply(required, key)
    for override in defaults.config_overrides:
        _supply(required, override.key_or_group)
    keys = sorted(k for k in required if k.split(".")[0] != "hydra")
    for key in keys:
        OmegaConf.update(cfg, key, MISSING, merge=False)
    return keys


def _leaves(node: DictConfig, prefix: str, top: bool = True) -> Iterator[tuple[str, bool]]:
    """(dotted key, is ``???``) of each value a config file sets (lists are values)."""
    for key in node:
        if top and key == "defaults":  # the file's defaults list, not a value
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _leaves(child, f"{prefix}{key}.", top=False)
        else:
            yield f"{prefix}{key}", child._is_missing()


def _supply(required: set[str], key: str) -> None:
    """A value set at ``key`` supplies it, the keys under it and the node above it."""
    required.difference_update([k for k in required if k == key or k.startswith(key + ".")
                                or key.startswith(k + ".")])


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
