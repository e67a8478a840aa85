"""Cluster launch at its boundaries: the sbatch file our Slurm launcher config makes submitit
write, and the multi-node LLaMA-Factory and verl launches the stages build from the composed
config and a fake Slurm environment. No Slurm is needed: fake ``srun`` / ``sbatch`` executables
stand in for the cluster, and the sbatch file submitit hands them is asserted line by line.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from conftest import CONF
from skill_factory.config.schema import register_configs

SLURM_ENV = {"SLURM_JOB_ID": "777", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
             "SLURM_JOB_NODELIST": "gpu-a[07-08]", "SLURM_NODEID": "0", "SLURM_GPUS_ON_NODE": "8"}


def _compose(overrides, tmp_path):
    """The full config Hydra builds for a multirun, hydra node included."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    # what a real multirun fills in: the sweep directory and the job name
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        cfg.hydra.job.name = "skillfactory"
    HydraConfig.instance().set_config(cfg)
    return cfg


def _fake_cluster(tmp_path, monkeypatch) -> Path:
    """``srun`` (so submitit believes it is on a cluster) and an ``sbatch`` that keeps the file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "submitted.sh"
    scripts = {"srun": "#!/bin/sh\nexit 0\n",
               "sbatch": f'#!/bin/sh\ncp "$1" {record}\necho "Submitted batch job 4242"\n'}
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for var in ("SKILLFACTORY_SLURM_PARTITION", "SKILLFACTORY_SLURM_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    return record


def _task(cfg):  # pragma: no cover - pickled into the submission, never run here
    return None


def _submit(cfg, monkeypatch, jobs):
    """Launch ``jobs`` (lists of overrides) through the configured launcher up to sbatch."""
    import submitit

    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=_task, config=cfg)
    seen = {}
    real_update = submitit.AutoExecutor.update_parameters

    def update_parameters(self, **kwargs):
        seen.update(kwargs)
        return real_update(self, **kwargs)

    monkeypatch.setattr(submitit.AutoExecutor, "update_parameters", update_parameters)
    # the jobs were submitted; do not wait for a cluster to run them
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda self: ["submitted"])
    assert launcher.launch(jobs, initial_job_idx=0) == ["submitted"] * len(jobs)
    return launcher, seen


def _sbatch_flags(text: str) -> dict[str, str]:
    flags = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            flags[key] = value
    return flags


def test_slurm_launcher_submits_one_process_per_job_on_the_model_allocation(tmp_path, monkeypatch):
    record = _fake_cluster(tmp_path, monkeypatch)
    cfg = _compose(["hydra/launcher=slurm", "experiment=paper/skillfactory", "model=qwen2_5_7b_instruct",
                    "hydra.launcher.partition=gpu", "hydra.launcher.account=my-project",
                    "hydra.launcher.timeout_min=600"], tmp_path)
    launcher, seen = _submit(cfg, monkeypatch, [["seed=0"], ["seed=1"]])

    assert type(launcher).__module__ == "skill_factory.cluster"
    # exactly what hydra-submitit-launcher hands submitit for our config
    assert seen == {
        "timeout_min": 600, "cpus_per_task": None, "gpus_per_node": 8, "tasks_per_node": 1, "mem_gb": None,
        "nodes": 1, "name": "skillfactory", "stderr_to_stdout": False,
        "slurm_partition": "gpu", "slurm_qos": None, "slurm_comment": None, "slurm_constraint": None,
        "slurm_exclude": None, "slurm_gres": None, "slurm_cpus_per_gpu": None, "slurm_gpus_per_task": None,
        "slurm_mem_per_gpu": None, "slurm_mem_per_cpu": None, "slurm_account": "my-project",
        "slurm_signal_delay_s": 120, "slurm_additional_parameters": {"exclusive": True},
        "slurm_array_parallelism": 256, "slurm_setup": None, "slurm_use_srun": False,
    }
    text = record.read_text()
    folder = tmp_path / "sweep" / ".submitit"
    assert _sbatch_flags(text) == {
        "account": "my-project",
        "array": "0-1%2",
        "error": f"{folder}/%A_%a/%A_%a_0_log.err",
        "exclusive": "",
        "gpus-per-node": "8",
        "job-name": "skillfactory",
        "nodes": "1",
        "ntasks-per-node": "1",
        "open-mode": "append",
        "output": f"{folder}/%A_%a/%A_%a_0_log.out",
        "partition": "gpu",
        "signal": "USR2@120",
        "time": "600",
        "wckey": "submitit",
    }
    # one skillfactory process per job, in the batch script itself: no srun around it
    command = text.split("# command\n", 1)[1].strip().splitlines()
    assert command[0] == "export SUBMITIT_EXECUTOR=slurm"
    assert command[1].endswith(f"-u -m submitit.core._submit {folder}/%j")
    assert not any(line.startswith("srun") for line in command)


def test_slurm_launcher_reads_nodes_gpus_and_site_from_config(tmp_path, monkeypatch):
    record = _fake_cluster(tmp_path, monkeypatch)
    monkeypatch.setenv("SKILLFACTORY_SLURM_PARTITION", "a100")
    monkeypatch.setenv("SKILLFACTORY_SLURM_ACCOUNT", "lab")
    cfg = _compose(["hydra/launcher=slurm", "model=qwen2_5_1_5b_instruct", "model.resources.nnodes=2"], tmp_path)
    _submit(cfg, monkeypatch, [["seed=0"]])
    flags = _sbatch_flags(record.read_text())
    assert (flags["partition"], flags["account"], flags["nodes"], flags["gpus-per-node"], flags["time"]) == \
        ("a100", "lab", "2", "4", "2880")
    assert "array" not in flags  # a single job is not an array


def test_local_launcher_is_the_default(tmp_path):
    cfg = _compose([], tmp_path)
    assert cfg.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "local"


# --- multi-node launches the GPU stages build inside a Slurm job ---------------------------

def _typed(make_cfg, *overrides):
    return make_cfg("experiment=paper/skillfactory", "model=qwen2_5_7b_instruct", *overrides)


def test_sft_fans_out_over_the_allocation_from_the_composed_config(make_cfg):
    from skill_factory.llamafactory.launch import build_launch
    from skill_factory.stages.sft import settings, topology

    cfg = _typed(make_cfg, "sft.nnodes=2", "sft.master_port=29511")
    topo = topology(cfg, settings(cfg), environ=SLURM_ENV)
    launch = build_launch("/art/sft/train.yaml", topo, cli="/venv/bin/llamafactory-cli")
    assert launch.argv == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                           "bash", "-c", 'NODE_RANK="$SLURM_NODEID" exec /venv/bin/llamafactory-cli train '
                           "/art/sft/train.yaml"]
    assert launch.env == {"FORCE_TORCHRUN": "1", "NNODES": "2", "NPROC_PER_NODE": "8",
                          "MASTER_ADDR": "gpu-a07", "MASTER_PORT": "29511"}


def test_verl_joins_the_ray_head_on_the_first_host_of_the_allocation(make_cfg):
    verl_run = pytest.importorskip("skill_factory.rl.verl_run")

    cfg = _typed(make_cfg, "rl.verl.nnodes=2")
    res = verl_run.resources(cfg)
    address = verl_run.ray_address(cfg, res, environ=SLURM_ENV)
    assert address == "gpu-a07:6379"
    assert verl_run.launch_env(cfg, address) == {"HYDRA_FULL_ERROR": "1", "RAY_ADDRESS": "gpu-a07:6379"}
    paths = verl_run.Paths(model="/art/sft/model", train_file="/art/rl/data/train.parquet", val_file=None,
                           checkpoint_dir="/art/rl/checkpoints", reward_file="/repo/rewards/answer_tag.py",
                           hydra_dir="/art/rl/hydra")
    ovr = verl_run.overrides(cfg, paths, experiment_name="x", loggers=["console"])
    assert ["trainer.nnodes=2", "trainer.n_gpus_per_node=8"] == \
        [o for o in ovr if o.startswith(("trainer.nnodes=", "trainer.n_gpus_per_node="))]


def test_a_sweep_over_model_sizes_gets_each_models_allocation(tmp_path, monkeypatch):
    """The plugin resolves its settings once, where a swept model= is not applied; ours per job."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import HydraContext, RunMode

    _fake_cluster(tmp_path, monkeypatch)
    submitted = []
    register_configs()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    task = ["experiment=paper/skillfactory", "model=qwen2_5_1_5b_instruct,qwen2_5_7b_instruct", "seed=0,1"]
    cfg = loader.load_configuration("config", overrides=["hydra/launcher=slurm", *task], run_mode=RunMode.MULTIRUN)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        cfg.hydra.job.name = "skillfactory"
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()), task_function=_task,
                   config=cfg)
    assert launcher.params["gpus_per_node"] == 4  # the plugin's view: the experiment's own model

    import submitit

    def submit(self, command):
        submitted.append((self.parameters["gpus_per_node"], self.parameters.get("map_count")))
        return real_submit(self, command)

    real_submit = submitit.slurm.slurm.SlurmExecutor._submit_command
    monkeypatch.setattr(submitit.slurm.slurm.SlurmExecutor, "_submit_command", submit)
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda self: [self.job_id])
    jobs = [["experiment=paper/skillfactory", f"model={m}", f"seed={s}"]
            for m in ("qwen2_5_1_5b_instruct", "qwen2_5_7b_instruct") for s in (0, 1)]
    assert launcher.launch(jobs, initial_job_idx=0) == ["4242_0", "4242_1", "4242_0", "4242_1"]
    assert submitted == [(4, 2), (8, 2)]  # one array per model size
    assert launcher.params["gpus_per_node"] == 4  # restored after the sweep
