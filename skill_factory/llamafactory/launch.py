"""The exact ``llamafactory-cli train`` command and environment, and running it streamed.

Why the environment and not flags: ``llamafactory-cli train`` decides how to launch from
environment variables (``launcher.py`` of LLaMA-Factory 0.9.5): with ``FORCE_TORCHRUN=1`` (or
more than one visible GPU) it re-executes itself under ``torchrun --nnodes $NNODES
--node_rank $NODE_RANK --nproc_per_node $NPROC_PER_NODE --master_addr $MASTER_ADDR
--master_port $MASTER_PORT``. So one command serves every topology; only the variables
differ:

==========================  =================================================================
topology                    what we set
==========================  =================================================================
CPU (the tiny model)        nothing (plain process; ``OMP_NUM_THREADS`` if asked)
one GPU, no DeepSpeed       nothing
one GPU with DeepSpeed      ``FORCE_TORCHRUN=1 NNODES=1 NODE_RANK=0 NPROC_PER_NODE=1``
                            (DeepSpeed needs a distributed launch; LLaMA-Factory refuses
                            it otherwise)
N GPUs on one node          ``FORCE_TORCHRUN=1 NNODES=1 NODE_RANK=0 NPROC_PER_NODE=N``
                            (``NPROC_PER_NODE`` explicit: the default counts the GPUs of
                            the launching machine, which is not always the training one)
M nodes                     also ``NNODES=M NODE_RANK=r MASTER_ADDR=… MASTER_PORT=…``
==========================  =================================================================

Multi-node inside a Slurm allocation (``SLURM_JOB_ID`` set, ``SLURM_JOB_NUM_NODES`` >= M):
one process of ours runs on the first node and fans out with ``srun --nodes=M
--ntasks-per-node=1``, each task taking ``NODE_RANK=$SLURM_NODEID``; ``MASTER_ADDR`` is the
first host of the allocation. Why not one ``skillfactory`` per node: the nodes would share
one artifact directory and its lock, and the others would wait for the first while the first
waits for them at the rendezvous. Outside Slurm, this node's rank and the rendezvous come
from ``sft.node_rank`` / ``sft.master_addr`` / ``sft.master_port`` or ``NODE_RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT``, and the other nodes run the written ``launch.sh`` with
their own ``NODE_RANK``.

The subprocess's output is streamed line by line into ``logging`` with a prefix and into a
log file; progress-bar redraws (carriage returns) are rate-limited so a log file stays
readable.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from skill_factory.errors import SkillFactoryError
from skill_factory.llamafactory.emit import SettingError

log = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29500
LOG_PREFIX = "[llamafactory]"


@dataclass(frozen=True)
class Topology:
    """Where training runs: nodes x processes per node, and the rendezvous."""

    nnodes: int = 1
    nproc_per_node: int = 1
    # False = a plain process (CPU, or one GPU without DeepSpeed)
    distributed: bool = False
    node_rank: int = 0
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    # fan out over the nodes of this Slurm allocation with srun
    slurm: bool = False


@dataclass
class Launch:
    """A command plus the variables we add to the inherited environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """A standalone bash script running the same command."""
        lines = ["#!/usr/bin/env bash",
                 "# Written by skill-factory's sft stage: the exact LLaMA-Factory launch.",
                 "# On extra nodes of a run outside Slurm: NODE_RANK=<k> bash launch.sh",
                 "set -euo pipefail"]
        for key, value in self.env.items():
            if key == "NODE_RANK":
                lines.append(f"export NODE_RANK=${{NODE_RANK:-{shlex.quote(value)}}}")
            else:
                lines.append(f"export {key}={shlex.quote(value)}")
        lines.append("exec " + shlex.join(self.argv))
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"argv": list(self.argv), "env": dict(self.env), "command": shlex.join(self.argv)}


def llamafactory_cli() -> str:
    """``llamafactory-cli`` of this environment (next to the running Python), else on PATH."""
    here = Path(sys.executable).parent / "llamafactory-cli"
    if here.exists():
        return str(here)
    found = shutil.which("llamafactory-cli")
    if found is None:
        raise SkillFactoryError("llamafactory-cli not found next to this Python or on PATH "
                                "(fix: run bash launch/setup.sh, or pip install llamafactory==0.9.5)")
    return found


# --- Slurm ------------------------------------------------------------------------------

def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compact host list (``gpu[01-03,07],cpu5``) as host names, in order."""
    hosts: list[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        m = re.fullmatch(r"(.*?)\[([^\]]*)\](.*)", item)
        if not m:
            hosts.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for part in ranges.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                hosts += [f"{prefix}{i:0{len(lo)}d}{suffix}" for i in range(int(lo), int(hi) + 1)]
            else:
                hosts.append(f"{prefix}{part}{suffix}")
    return hosts


def slurm_allocation(environ: Mapping[str, str]) -> Optional[dict]:
    """Nodes of the Slurm job this process runs in (None outside Slurm)."""
    if not environ.get("SLURM_JOB_ID"):
        return None
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or ""
    hosts = expand_nodelist(nodelist) if nodelist else []
    nnodes = int(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or len(hosts) or 1)
    return {"job_id": environ["SLURM_JOB_ID"], "nnodes": nnodes, "hosts": hosts}


def resolve_topology(*, nnodes: int, gpus_per_node: int, use_cpu: bool, deepspeed: bool,
                     node_rank: Optional[int] = None, master_addr: Optional[str] = None,
                     master_port: Optional[int] = None,
                     environ: Optional[Mapping[str, str]] = None) -> Topology:
    """The topology from settings (already merged with the model's resources) and the environment."""
    environ = os.environ if environ is None else environ
    if use_cpu:
        if nnodes > 1:
            raise SettingError("sft.nnodes", "CPU training (sft.use_cpu=true) runs on one node",
                               "sft.nnodes=1, or train on GPUs")
        return Topology()
    if nnodes == 1:
        distributed = gpus_per_node > 1 or deepspeed
        return Topology(1, gpus_per_node, distributed, 0, master_addr, master_port)
    port = master_port or int(environ.get("MASTER_PORT") or DEFAULT_MASTER_PORT)
    alloc = slurm_allocation(environ)
    if alloc is not None and alloc["nnodes"] >= nnodes and node_rank is None:
        addr = master_addr or (alloc["hosts"][0] if alloc["hosts"] else None)
        if addr is None:
            raise SettingError("sft.master_addr", "the Slurm allocation names no hosts (SLURM_JOB_NODELIST is "
                               "empty)", "set sft.master_addr")
        return Topology(nnodes, gpus_per_node, True, 0, addr, port, slurm=True)
    rank = node_rank if node_rank is not None else int(environ.get("NODE_RANK") or 0)
    addr = master_addr or environ.get("MASTER_ADDR")
    if not addr:
        where = (f"this Slurm job has {alloc['nnodes']} node(s), fewer than {nnodes}"
                 if alloc else "not inside a Slurm allocation")
        raise SettingError("sft.master_addr", f"{nnodes}-node training needs a rendezvous host ({where})",
                           "run inside `sbatch --nodes=N` (see launch/slurm_sft.sbatch), or set sft.master_addr "
                           "and sft.node_rank (or MASTER_ADDR and NODE_RANK)")
    if not 0 <= rank < nnodes:
        raise SettingError("sft.node_rank", f"{rank} is not in [0, {nnodes})", "use a rank below sft.nnodes")
    return Topology(nnodes, gpus_per_node, True, rank, addr, port)


def build_launch(yaml_path: str | os.PathLike, topo: Topology, extra_env: Optional[Mapping[str, str]] = None,
                 cli: Optional[str] = None) -> Launch:
    """The command and added environment that run ``yaml_path`` on ``topo``."""
    cli = cli or llamafactory_cli()
    train = [cli, "train", str(yaml_path)]
    env: dict[str, str] = {}
    if topo.distributed:
        env.update(FORCE_TORCHRUN="1", NNODES=str(topo.nnodes), NODE_RANK=str(topo.node_rank),
                   NPROC_PER_NODE=str(topo.nproc_per_node))
        if topo.master_addr:
            env["MASTER_ADDR"] = topo.master_addr
        if topo.master_port:
            env["MASTER_PORT"] = str(topo.master_port)
    env.update(extra_env or {})
    if not topo.slurm:
        return Launch(train, env)
    env.pop("NODE_RANK")
    argv = ["srun", f"--nodes={topo.nnodes}", f"--ntasks={topo.nnodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1", "bash", "-c", 'NODE_RANK="$SLURM_NODEID" exec ' + shlex.join(train)]
    return Launch(argv, env)


# --- running ------------------------------------------------------------------------------

def run_streamed(launch: Launch, log_file: Path, logger: logging.Logger = log, prefix: str = LOG_PREFIX,
                 cwd: Optional[Path] = None, redraw_seconds: float = 15.0) -> int:
    """Run ``launch``; every output line goes to ``log_file`` and to ``logger`` with ``prefix``.

    A segment ended by a carriage return (a progress-bar redraw) is logged at most every
    ``redraw_seconds``; newline-ended lines always are. Returns the exit code.
    """
    env = {**os.environ, **launch.env, "PYTHONUNBUFFERED": "1"}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logger.info("%s launching: %s", prefix, " ".join(f"{k}={shlex.quote(v)}" for k, v in launch.env.items())
                + (" " if launch.env else "") + shlex.join(launch.argv))
    with open(log_file, "a", encoding="utf-8") as sink:
        proc = subprocess.Popen(launch.argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                bufsize=0)
        assert proc.stdout is not None
        pending = b""
        last_redraw = float("-inf")
        try:
            while True:
                chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
                if not chunk:
                    break
                sink.write(chunk.decode("utf-8", "replace"))
                sink.flush()
                pending += chunk
                while True:
                    m = re.search(rb"[\r\n]", pending)
                    if m is None:
                        break
                    segment, sep, pending = pending[:m.start()], m.group(), pending[m.end():]
                    text = segment.decode("utf-8", "replace").rstrip()
                    if not text:
                        continue
                    now = time.monotonic()
                    if sep == b"\r":
                        if now - last_redraw < redraw_seconds:
                            continue
                        last_redraw = now
                    logger.info("%s %s", prefix, text)
            if pending.strip():
                logger.info("%s %s", prefix, pending.decode("utf-8", "replace").rstrip())
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
