"""Our side of LLaMA-Factory: what we write for it, how we check it, how we launch it.

Why a package of its own: the sft stage is one of several users (the distillation baselines
bring their own ShareGPT data; users with their own LLaMA-Factory checkout merge our dataset
entry), and each concern is testable without training:

- ``emit``: ShareGPT data normalised to one layout, the ``dataset_info.json`` entry, the
  training yaml (commented sections), and the merge into a user's ``dataset_info.json``;
- ``preflight``: LLaMA-Factory's own argument parser, dataset resolution and converter, and
  a template-vs-tokenizer check, in-process and without training;
- ``launch``: the exact ``llamafactory-cli train`` command and environment for CPU, one GPU,
  several GPUs (``FORCE_TORCHRUN``) and several nodes (``NNODES``/``NODE_RANK``/
  ``MASTER_ADDR``/``MASTER_PORT``, or a Slurm allocation), and the streamed subprocess.

Merge our dataset entry into your own LLaMA-Factory checkout (other entries are kept)::

    python -m skill_factory.llamafactory merge-dataset-info <sft artifact> LLaMA-Factory/data/dataset_info.json

Nothing here imports ``llamafactory`` (or torch) at module import: only the pre-flight does,
when it runs.
"""
from skill_factory.llamafactory.emit import (  # noqa: F401
    DATASET_INFO,
    DATASET_NAME,
    merge_dataset_info,
)
