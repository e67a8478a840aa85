"""Cluster launch: every job of a Hydra multirun as one Slurm job, one ``skillfactory`` each.

    skillfactory -m hydra/launcher=slurm experiment=paper/skillfactory seed=0,1,2 \\
        hydra.launcher.partition=gpu hydra.launcher.account=my-project

``conf/hydra/launcher/slurm.yaml`` selects this launcher and fills hydra-submitit-launcher's
settings from the config: nodes and GPUs per node from the model file's ``resources`` (what
the sft and rl stages will use), partition and account from the command line or
``SKILLFACTORY_SLURM_PARTITION`` / ``SKILLFACTORY_SLURM_ACCOUNT``, time from
``hydra.launcher.timeout_min``.

Why a subclass of hydra-submitit-launcher's ``SlurmLauncher``: submitit normally starts the job
function through ``srun`` as nodes x tasks-per-node tasks, so on a 2-node allocation the whole
pipeline would run twice, once per node, both writing the same artifacts. Here the GPU stages
fan out over the allocation themselves: the sft stage with its own ``srun`` (one LLaMA-Factory
``torchrun`` per node, ``skill_factory.llamafactory.launch``) and the rl stage through a Ray
cluster on the allocation's hosts (``skill_factory.rl.verl_run``); both read the node list with
the project's one Slurm parser, ``skill_factory.llamafactory.launch.slurm_allocation``. So this
launcher runs the job function once, in the batch script on the first node (submitit's
``use_srun=False``), and leaves the nodes free for those steps: a step of ours holding every
node would make theirs wait for resources it never releases.

Each job gets the allocation of *its* model: the plugin resolves the launcher settings once,
against the sweep's primary config, where a swept ``model=a,b`` is not applied yet, so every
job would get the first configuration's nodes and GPUs. This launcher resolves them per job
(Hydra's sweep config of that job) and submits each run of consecutive jobs with equal settings
as one job array; ``skillfactory -m hydra/launcher=slurm model=qwen2_5_1_5b_instruct,
qwen2_5_7b_instruct`` asks for 4 GPUs for the first and 8 for the second.

Jobs of one sweep share the stage cache (``paths.artifacts``), so it must sit on a file system
every node sees and that supports ``flock`` (the cache's locks); the first job to need an
upstream artifact produces it, the others wait and reuse it.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as _SubmititSlurmLauncher,
)
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
# settings fixed for the whole sweep (its folder), never re-resolved per job
SWEEP_WIDE = ("submitit_folder",)


class SlurmLauncher(_SubmititSlurmLauncher):
    """hydra-submitit-launcher's Slurm launcher, with the job function run once per job.

    ``use_srun`` is not a field of the plugin's typed config, so it is set here; a
    ``hydra.launcher.use_srun`` given anyway (an untyped launcher config) wins.
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # the launcher hands every setting it does not know to submitit as slurm_<name>
        self.params.setdefault("use_srun", False)

    def job_params(self, overrides: Sequence[str]) -> dict[str, Any]:
        """The launcher settings resolved against one job's own config (its model's resources)."""
        if self.hydra_context is None or self.config is None:
            return dict(self.params)
        job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        resolved = OmegaConf.to_container(job_cfg.hydra.launcher, resolve=True)
        params = dict(self.params)
        params.update({k: v for k, v in resolved.items() if k in params and k not in SWEEP_WIDE})
        return params

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit runs of consecutive jobs with equal settings, each as one job array."""
        runs: list[tuple[dict[str, Any], list[Sequence[str]]]] = []
        for overrides in job_overrides:
            params = self.job_params(overrides)
            if runs and runs[-1][0] == params:
                runs[-1][1].append(overrides)
            else:
                runs.append((params, [overrides]))
        sweep_params, results, start = self.params, [], initial_job_idx
        try:
            for params, jobs in runs:
                if len(runs) > 1:
                    log.info("jobs #%d-#%d: %s node(s) x %s GPU(s)", start, start + len(jobs) - 1,
                             params.get("nodes"), params.get("gpus_per_node"))
                self.params = params
                results += super().launch(jobs, start)
                start += len(jobs)
        finally:
            self.params = sweep_params
        return results
