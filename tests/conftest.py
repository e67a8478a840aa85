"""Shared fixtures: config composition against the real ``conf/`` tree, GPU skipping."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from skill_factory.config.load import restore_required, to_typed
from skill_factory.config.schema import register_configs

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip cleanly on machines without CUDA."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch means no GPU either
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def compose_cfg(overrides=(), conf=CONF):
    """Compose ``conf/config.yaml`` with overrides (the DictConfig, as the entrypoint's job
    gets it: with the ``???`` of config files that nothing supplied put back)."""
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
        restore_required(cfg, list(overrides))
        return cfg


@pytest.fixture
def make_cfg(tmp_path, monkeypatch):
    """Typed config with all paths under a temporary directory."""
    monkeypatch.setenv("SKILLFACTORY_HOME", str(tmp_path / "home"))
    for var in ("SKILLFACTORY_ARTIFACTS", "SKILLFACTORY_RUNS"):
        monkeypatch.delenv(var, raising=False)

    def make(*overrides):
        return to_typed(compose_cfg(overrides), run_dir=tmp_path / "run")

    return make
