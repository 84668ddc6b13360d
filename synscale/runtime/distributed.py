"""torch.distributed for DeepSpeed, initialized from the environment.

Under Slurm every srun task reads its rank, world size and local rank from
SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, and the master address from the
job's first node, so a multi-node training stage needs no ssh launcher. A
stage run by the local backend is a world of one over loopback. Initialized
once per process, since a local worker runs many training stages in a row.

Rendezvous cannot collide: rank 0 opens the TCP store on a port the kernel
picks for it (port 0, bound at once, so no other process can hold it), and
publishes the port in a file on the shared run directory, one per job and
attempt (SYNSCALE_RENDEZVOUS); the other ranks read it there. A port derived
from the job id, as before, fell inside the ephemeral range and was once
taken by an outgoing connection (EADDRINUSE).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

RENDEZVOUS_TIMEOUT_S = 600.0


def _first_node(nodelist: str) -> str:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0 or not out.stdout.split():
        raise RuntimeError(f"cannot expand SLURM_JOB_NODELIST={nodelist!r}: {out.stderr.strip()}")
    return out.stdout.split()[0]


def slurm_environment(env: dict[str, str]) -> dict[str, str]:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR from a Slurm task's env (the
    port comes from the rendezvous)."""
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"],
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": _first_node(env["SLURM_JOB_NODELIST"])}


def rendezvous_file(folder: Path, env: dict[str, str]) -> Path:
    """Where a job's rank 0 publishes its store's port: one file per job and
    attempt, so a requeued job never reads its last attempt's port."""
    job = env.get("SLURM_JOB_ID", "local")
    return Path(folder) / "rendezvous" / f"{job}.{env.get('SLURM_RESTART_COUNT', '0')}.json"


def open_store(rank: int, world: int, master: str, published: Path | None,
               timeout_s: float = RENDEZVOUS_TIMEOUT_S):
    """The TCP store every rank joins: rank 0 binds a kernel-chosen port and
    publishes it; the others wait for it to appear."""
    import datetime

    import torch.distributed as dist

    wait = datetime.timedelta(seconds=timeout_s)
    if rank == 0:
        store = dist.TCPStore(master, 0, world, True,
                              timeout=wait, wait_for_workers=False)
        if world > 1:
            from synscale.plan import state
            state.write_json(published, {"addr": master, "port": store.port,
                                         "host": socket.gethostname()})
        return store
    deadline = time.time() + timeout_s
    while not published.exists():
        if time.time() > deadline:
            raise dist.DistNetworkError(f"rendezvous: rank 0 published no port in {published} "
                                        f"within {timeout_s:.0f} s")
        time.sleep(0.2)
    where = json.loads(published.read_text())
    return dist.TCPStore(where["addr"], where["port"], world, False, timeout=wait)


def rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def extensions_folder() -> str:
    """Where DeepSpeed's JIT-built ops go: one folder per Python environment.
    torch keys the build by name only, so two environments sharing a home
    directory (two checkouts, a container and a venv on a cluster's shared
    home) rebuild each other's op at every process start, and array tasks
    starting together race on the rebuild (seen: ninja interrupted, the
    training failed). A user's TORCH_EXTENSIONS_DIR wins."""
    import hashlib
    import sys
    default = os.path.expanduser(
        f"~/.cache/torch_extensions/py-{hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]}")
    return os.environ.setdefault("TORCH_EXTENSIONS_DIR", default)


def ensure_initialized(device: str = "auto") -> dict:
    """Initialize once; returns the rank, world size, master address and the
    device used. `device` (auto | cuda | cpu, runtime/device.py) picks the
    backend: NCCL on CUDA, gloo on the CPU."""
    import torch.distributed as dist

    from synscale.runtime import device as devices

    if not (dist.is_available() and dist.is_initialized()):
        if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
            os.environ.update(slurm_environment(dict(os.environ)))
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                           ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        world, me = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        choice = devices.select(device)  # after LOCAL_RANK is known, before deepspeed's import
        folder = os.environ.get("SYNSCALE_RENDEZVOUS")
        if world > 1 and not folder:
            raise RuntimeError("a world of several ranks needs SYNSCALE_RENDEZVOUS, a folder on "
                               "the shared run directory (StageTask sets it)")
        published = rendezvous_file(Path(folder), dict(os.environ)) if folder else None
        store = open_store(me, world, os.environ["MASTER_ADDR"], published)
        os.environ["MASTER_PORT"] = str(store.port)  # read by libraries that look
        import logging

        extensions_folder()  # before deepspeed builds its shm op at init
        import deepspeed
        from deepspeed.utils import logger as ds_logger

        ds_logger.setLevel(logging.WARNING)
        # DeepSpeed's ZeRO calls these torch collectives by their deprecated
        # names, and the warning repeats on every call (two a step): 200k
        # lines in a job's log over a long run.
        import warnings
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"`torch\.distributed\.(all_gather_into_tensor|"
                                        r"reduce_scatter_tensor)` is deprecated")
        # DeepSpeed keeps a process group that is already there
        dist.init_process_group(choice.backend, store=store, rank=me, world_size=world)
        deepspeed.init_distributed(dist_backend=choice.backend, auto_mpi_discovery=False)
    elif devices.chosen() is None:
        devices.select(device)  # a group someone else made: still the device asked for
    elif devices.choose(device) != devices.chosen():
        raise devices.DeviceError(f"device = {device!r}: this process's group already runs on "
                                  f"{devices.chosen().device}; one process keeps one device")
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
            "device": devices.chosen().device,
            "master_addr": os.environ["MASTER_ADDR"], "host": socket.gethostname(),
            "node": os.environ.get("SLURMD_NODENAME", "")}


def leave_process_group() -> None:
    """Shut the process group (gloo or NCCL) down before the interpreter
    exits: left running, its threads abort a finished multi-task job at exit
    ("terminate called without an active exception"), and Slurm then marks the job FAILED, which blocks
    every afterok dependent."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
