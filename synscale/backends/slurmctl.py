"""The Slurm commands synscale runs besides sbatch (squeue, sacct, scontrol,
scancel): one call each, whatever the number of jobs, and a failure said in
one line (`SlurmError`) rather than a traceback.

A controller that does not answer (slurmctld down, restarting, or the
network between) is the failure users meet: `unreachable` tells it apart,
so a launch can stop before writing anything and status can fall back to
what the run directory says.
"""
from __future__ import annotations

import subprocess

from synscale.backends.decide import SQUEUE_FORMAT, parse_max_array_size, parse_squeue
from synscale.backends.failures import Accounted, Queued, parse_sacct

TIMEOUT_S = 120  # Slurm retries for MessageTimeout (10 s) itself; past this it is gone

# what Slurm's client commands say when slurmctld does not answer
UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
               "Zero Bytes were transmitted", "is DOWN", "Unable to establish controller")


class SlurmError(RuntimeError):
    """A Slurm command failed; the message is its one line."""

    def __init__(self, command: str, said: str):
        said = " ".join(said.split()) or "no output"
        self.unreachable = any(u.lower() in said.lower() for u in UNREACHABLE)
        # "squeue: error: ..." names itself already
        super().__init__(said if said.startswith(command.split()[0] + ":") else
                         f"{command}: {said}")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SlurmError(" ".join(cmd[:2]), f"no answer in {TIMEOUT_S} s; "
                         "Socket timed out (the controller is unreachable?)") from None


def _checked(cmd: list[str]) -> str:
    out = _run(cmd)
    if out.returncode != 0:
        raise SlurmError(" ".join(cmd[:2]), (out.stderr or out.stdout).strip())
    return out.stdout


def ping() -> str | None:
    """None when the controller answers; else what `scontrol ping` said."""
    try:
        said = _checked(["scontrol", "ping"])
    except SlurmError as e:
        return str(e)
    return None if "is UP" in said else f"scontrol ping: {' '.join(said.split())}"


def max_array_size() -> int:
    return parse_max_array_size(_checked(["scontrol", "show", "config"]))


def queue_states() -> dict[str, Queued]:
    """job id (array tasks as '<array>_<index>') -> Queued, in one squeue call
    (decide.parse_squeue: NEVER for a dependency that can never be met)."""
    return parse_squeue(_checked(["squeue", "--me", "-h", "-r", "-O", SQUEUE_FORMAT]))


def cancel(job_ids: list[str]) -> None:
    """One scancel. A job that ended meanwhile is no error; no controller is."""
    if job_ids:
        _tolerant(["scancel", *job_ids])


def release(job_ids: list[str]) -> None:
    """Let held jobs start, in one call (one that ended meanwhile is no error)."""
    if job_ids:
        _tolerant(["scontrol", "release", ",".join(job_ids)])


def _tolerant(cmd: list[str]) -> None:
    out = _run(cmd)
    if out.returncode != 0:
        error = SlurmError(" ".join(cmd[:2]), (out.stderr or out.stdout).strip())
        if error.unreachable:
            raise error


def accounting_states(arrays: list[str]) -> dict[str, Accounted] | None:
    """job id -> Accounted (state, exit code, signal, earlier attempts), in
    one call; None where accounting is off or its daemon does not answer."""
    if not arrays:
        return {}
    try:
        out = _run(["sacct", "-n", "-P", "-X", "-D", "-j", ",".join(arrays),
                    "-o", "JobID,State,ExitCode"])
    except SlurmError:
        return None
    if out.returncode != 0 or "accounting storage is disabled" in out.stdout + out.stderr:
        return None
    return parse_sacct(out.stdout)
