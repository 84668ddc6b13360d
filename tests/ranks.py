"""Several ranks of synscale's stages as local processes (gloo), for the
multi-rank tests: each rank runs a list of stages in a row, as a local worker
does, so a launch pays the ~25 s of process start-up (imports, FFCV's numba
compilation) once for several stages."""
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT

# Ranks of a list of stages (ROOT::STUDY::ID ...), as a local worker runs them
# one after another. Packs and evaluations run on rank 0 only. Mode
# "submitit" stands in for submitit's USR2 handler: on rank 0 it asks
# StageTask.checkpoint's question (which must be answered from the
# collective save, not by saving on one rank alone), then exits to be
# "requeued": the stage is run again in this process; other ranks' handler
# only returns. Mode "exit" is the same, except that a requeue ends the
# processes, as on Slurm, and a new launch resumes.
DRIVER = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
mode, items = sys.argv[1], [a.split("::") for a in sys.argv[2:]]
from synscale.study.load import load_study
from synscale.study.expand import expand
from synscale.runtime.harness import execute
from synscale.runtime.distributed import leave_process_group
rank = os.environ["RANK"]
current = []
if mode in ("submitit", "exit"):
    from synscale.runtime import preemption
    def handler(signum, frame):
        if rank != "0":
            return
        Path(current[0], "requeued-" + current[1]).write_text(str(preemption.save_now()))
        sys.exit(-1)
    signal.signal(signal.SIGUSR2, handler)
try:
    for root, study, stage_id in items:
        plan = expand(load_study(study))
        stage = plan.by_id[stage_id]
        if stage.kind != "train" and rank != "0":
            continue
        current[:] = [root, stage_id]
        for attempt in range(2):
            try:
                execute(root, stage, {i: plan.by_id[i].kind for i in stage.inputs})
                break
            except SystemExit:
                print("requeued", stage_id, flush=True)
                if mode == "exit":  # as submitit does: the job ends, a new one resumes
                    raise
finally:
    leave_process_group()
"""


def start(items, world=2, mode="plain", attempt="0", folder=None):
    """Two processes (ranks 0 and 1) running `items`, (root, study, stage id)
    each, in order."""
    procs = []
    for rank in range(world):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
               "DS_ACCELERATOR": "cpu", "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               # one rendezvous folder per launch: a port from the last one is stale
               "SYNSCALE_RENDEZVOUS": str(folder / "rendezvous" / attempt)}
        args = [f"{root}::{study}::{sid}" for root, study, sid in items]
        procs.append(subprocess.Popen([sys.executable, "-c", DRIVER, mode, *args], env=env,
                                      cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    return procs


def finish(procs, timeout=600):
    outs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
    return [p.returncode for p in procs], outs


def wait_for(done, procs, timeout=300):
    deadline = time.time() + timeout
    while not done():
        if any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            codes, outs = finish(procs, 30)
            pytest.fail(f"a rank ended early ({codes}):\n" + "\n".join(o[-3000:] for o in outs))
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def at_step(log, step: int):
    return lambda: log.exists() and f"step {step}/" in log.read_text()
