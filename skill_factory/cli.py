"""The ``skillfactory`` entrypoint: compose config, validate, run the stages.

    skillfactory                                  # the whole method on the tiny model
    skillfactory --cfg job                        # print the composed config
    skillfactory stages=[sample,reflect] seed=1   # some stages, other seed
    skillfactory -m traces.formats=[*C_full],[no_reflection]   # a sweep

Why this shape: Hydra composes and type-checks the config (a misspelled key fails here);
the job puts back the ``???`` (required values) of config files that Hydra's merge drops,
converts it to typed objects once, runs ``validate`` (every semantic error at once), then
the stage runner. A user error ends with one message and exit code 2; in a
multirun a failed job is logged with its output directory and the other jobs go on, and
the sweep exits non-zero at the end.
"""
from __future__ import annotations

import importlib
import io
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from skill_factory.config.load import restore_required, to_typed
from skill_factory.config.schema import SkillFactoryConfig, register_configs
from skill_factory.config.validate import validate
from skill_factory.errors import SkillFactoryError
from skill_factory.provenance import scrub_text

log = logging.getLogger("skill_factory")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# Jobs of this process's multirun that failed: (job number, output dir, message).
FAILED_JOBS: list[tuple[int, str, str]] = []


def load_stages(cfg: SkillFactoryConfig) -> None:
    """Register the built-in stages and any plugin modules named in ``plugins``."""
    importlib.import_module("skill_factory.stages")
    for module in cfg.plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SkillFactoryError(f"plugins: cannot import '{module}': {exc}") from exc


def render_tree(cfg: DictConfig) -> str:
    """The composed config as a Rich tree, one branch per top-level section."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, node in cfg.items():
        if key == "hydra":
            continue
        text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else str(node)
        tree.add(str(key)).add(Syntax(scrub_text(text), "yaml", theme="ansi_dark"))
    console = Console(file=io.StringIO(), record=True, width=100, force_terminal=False)
    console.print(tree)
    return console.export_text()


def run(cfg: SkillFactoryConfig, job_name: str = "skillfactory") -> dict:
    """Run the configured stages; return the run record (stage -> artifact info)."""
    from skill_factory.pipeline import Runner
    from skill_factory.tracking import make_tracker

    load_stages(cfg)
    validate(cfg)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.stages:
        log.info("no stages selected (stages=[]): nothing to run")
    tracker = make_tracker(cfg.logger, run_dir, job_name, cfg)

    def stage_done(art, status: str) -> None:
        tracker.stage_done(art, status)
        if art.stage == "eval" and status == "cached":
            # a cached evaluation still gets its report in this run's directory
            from skill_factory.stages.eval import publish_artifact

            publish_artifact(art, run_dir)

    runner = Runner(cfg, Path(cfg.paths.artifacts), on_stage_done=stage_done)
    ok = False
    try:
        runner.run()
        ok = True
    finally:
        record = runner.write_record(run_dir)
        tracker.finish(ok)
    log.info("artifacts used by this run: %s", record)
    return runner.record.entries


def _job(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = hc.runtime.output_dir
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        restore_required(cfg, hc.overrides.task, hc.job.config_name)  # a file's ??? the merge dropped
        typed = to_typed(cfg, run_dir=run_dir)
        tree = render_tree(cfg)
        Path(run_dir, "config_tree.txt").write_text(tree)
        if typed.print_config:
            log.info("composed config:\n%s", tree)
        run(typed, job_name=hc.job.name)
    except Exception as exc:  # noqa: BLE001 - the crash wrapper of every job
        user_error = isinstance(exc, SkillFactoryError)
        if user_error:
            log.error("%s", exc)
        else:
            log.exception("job crashed")
        if not multirun:
            if user_error:
                sys.exit(exc.exit_code)
            raise
        job = hc.job.num
        log.error("multirun job %s failed; its output directory: %s", job, run_dir)
        FAILED_JOBS.append((job, run_dir, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))


_hydra_entry = hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")(_job)


def main() -> None:
    register_configs()
    _hydra_entry()
    if FAILED_JOBS:
        log.error("%d multirun job(s) failed:", len(FAILED_JOBS))
        for job, run_dir, message in FAILED_JOBS:
            log.error("  job %s (%s): %s", job, run_dir, message)
        sys.exit(1)


if __name__ == "__main__":
    main()
