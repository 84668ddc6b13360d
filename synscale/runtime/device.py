"""Where a stage computes: the torch device, DeepSpeed's accelerator and the
process-group backend, chosen together from the study's `device` (auto |
cuda | cpu) and what this process can see.

`auto` takes a GPU when torch sees one and the CPU otherwise, so the same
study runs on a laptop and on a GPU cluster; `cuda` insists (an error where
no GPU is visible, rather than a silent week on the CPU). On CUDA every rank
takes GPU LOCAL_RANK (or the only one, where Slurm binds one GPU per task),
NCCL carries the collectives, DeepSpeed's CUDA accelerator is used and TF32
is allowed for fp32 matmuls. Without a GPU: the CPU accelerator and gloo,
exactly as before GPUs were supported.

DeepSpeed picks its accelerator once, from DS_ACCELERATOR, when it is first
imported: the choice sets the variable, and replaces an accelerator already
picked otherwise (a worker that imported deepspeed before).
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass

DEVICES = ("auto", "cuda", "cpu")


class DeviceError(RuntimeError):
    """A device was asked for that this process cannot use."""


@dataclass(frozen=True)
class Choice:
    device: str         # torch device: "cuda:N" or "cpu"
    accelerator: str    # DeepSpeed's accelerator (DS_ACCELERATOR): "cuda" or "cpu"
    backend: str        # torch.distributed backend: "nccl" on CUDA, "gloo" otherwise

    @property
    def cuda(self) -> bool:
        return self.accelerator == "cuda"


def choose(requested: str = "auto", env: dict | None = None) -> Choice:
    """The choice for `requested` in this environment (torch.cuda and
    LOCAL_RANK); changes nothing."""
    import torch

    if requested not in DEVICES:
        raise DeviceError(f"device = {requested!r}: expected one of {', '.join(DEVICES)}")
    env = os.environ if env is None else env
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "cpu" or (requested == "auto" and count == 0):
        return Choice("cpu", "cpu", "gloo")
    if count == 0:
        raise DeviceError("device = 'cuda', but torch sees no GPU (torch.cuda.is_available() "
                          f"is False; CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}): "
                          "ask Slurm for GPUs with [resources.<kind>] gpus, or use device = "
                          "'auto' or 'cpu'")
    local = int(env.get("LOCAL_RANK", env.get("SLURM_LOCALID", "0")))
    if local < count:
        index = local
    elif count == 1:  # Slurm bound one GPU to this task: it is the task's own
        index = 0
    else:
        raise DeviceError(f"LOCAL_RANK = {local}, but this task sees {count} GPUs: one GPU per "
                          "task, so [resources.train] gpus must be at least tasks_per_node")
    return Choice(f"cuda:{index}", "cuda", "nccl")


_chosen: Choice | None = None


def select(requested: str = "auto") -> Choice:
    """Choose, then make it so: DS_ACCELERATOR (before deepspeed is imported,
    or DeepSpeed's accelerator replaced), torch.cuda.set_device, TF32."""
    global _chosen
    choice = choose(requested)
    use_accelerator(choice.accelerator)
    if choice.cuda:
        import torch
        torch.cuda.set_device(torch.device(choice.device))
        _allow_tf32()
    _chosen = choice
    return choice


def chosen() -> Choice | None:
    """What `select` chose last in this process (None: nothing yet)."""
    return _chosen


def use_accelerator(name: str) -> None:
    os.environ["DS_ACCELERATOR"] = name
    real = sys.modules.get("deepspeed.accelerator.real_accelerator")
    if real is None or real.ds_accelerator is None or real.ds_accelerator._name == name:
        return
    if name == "cuda":
        from deepspeed.accelerator.cuda_accelerator import CUDA_Accelerator
        real.set_accelerator(CUDA_Accelerator())
    else:
        from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator
        real.set_accelerator(CPU_Accelerator())


def _allow_tf32() -> None:
    import torch
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9's spelling
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def use_threads(n: int) -> None:
    """Compute with `n` CPU threads in this process: torch's, and the BLAS under
    numpy and scikit-learn (the reference scorer's fit). A result's last bits
    depend on the count, so it is the backend's choice, never the machine's
    core count by default (an OpenBLAS left alone takes every core it sees)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)  # for libraries not loaded yet
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(n)
    threadpool_limits(n)  # for those already loaded


def where_computed() -> dict:
    """What a stage's floats depend on besides its inputs, spec and code (README,
    "What is reproducible"): the CPU's model (its vector units pick the kernels),
    torch's threads (they cut reductions), and the GPU when one computed."""
    out = {"cpu": _cpu_model()}
    torch = sys.modules.get("torch")  # a stage that never imported it computed no tensors
    if torch is not None:
        # the vector instructions torch's CPU kernels use (AVX2, AVX512, ...)
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gpu"] = torch.cuda.get_device_name()
    return out


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def to_device(tensor, device):
    """`tensor` on `device` without blocking the host: a CUDA copy from pinned
    memory runs while Python goes on queueing the step's kernels."""
    import torch
    device = torch.device(device)
    if device.type != "cuda" or tensor.device == device:
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
