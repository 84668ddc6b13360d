"""torch.distributed for DeepSpeed, initialized from the environment.

Under Slurm every srun task reads its rank, world size and local rank from
SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, and the master address from the
job's first node, so a multi-node training stage needs no ssh launcher. A
stage run by the local backend is a world of one over loopback. Initialized
once per process, since a local worker runs many training stages in a row.
"""
from __future__ import annotations

import os
import socket
import subprocess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_node(nodelist: str) -> str:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0 or not out.stdout.split():
        raise RuntimeError(f"cannot expand SLURM_JOB_NODELIST={nodelist!r}: {out.stderr.strip()}")
    return out.stdout.split()[0]


def slurm_environment(env: dict[str, str]) -> dict[str, str]:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT from a Slurm task's env."""
    job = env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "0"))
    task = env.get("SLURM_ARRAY_TASK_ID", "0")
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"],
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": _first_node(env["SLURM_JOB_NODELIST"]),
            # One port per (job, array task): tasks of two arrays may share a node.
            "MASTER_PORT": str(20000 + (int(job) * 131 + int(task)) % 20000)}


def rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def ensure_initialized() -> dict:
    """Initialize once; returns the rank, world size and master address used."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
            os.environ.update(slurm_environment(dict(os.environ)))
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                           ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        import logging

        import deepspeed
        from deepspeed.utils import logger as ds_logger

        ds_logger.setLevel(logging.WARNING)
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
            "master_addr": os.environ["MASTER_ADDR"], "host": socket.gethostname(),
            "node": os.environ.get("SLURMD_NODENAME", "")}
