"""What must exist before a study may write or submit anything.

`--dry-run` plans a study whose data, weights or cluster live elsewhere; a
real launch checks them here first, so a missing piece stops it before the
run directory exists.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from synscale.study.schema import Study

# Generators whose runner ships in this version.
RUNNABLE_GENERATORS = ("embedded-ddpm",)


def problems(s: Study, backend: str) -> list[str]:
    file = s.path
    out = []
    if backend == "slurm":
        from synscale.backends.profile import check_resources, load_profile

        if shutil.which("sbatch") is None:
            out.append(f"{file}: backend.name = 'slurm': no sbatch on PATH; this machine is not "
                       "a Slurm login node (use --backend local to run here)")
        profile, found = load_profile(s.backend.profile, file)
        out += found + (check_resources(s.resources, profile, file) if profile else [])
    d = s.data
    if d.dataset == "imagefolder":
        for key in ("train_dir", "val_dir"):
            path = getattr(d, key)
            if path and not Path(path).is_dir():
                out.append(f"{file}: data.{key} = {path!r}: no such directory (a folder of "
                           "class folders is expected)")
        out.append(f"{file}: data.dataset = 'imagefolder': packing image folders is not "
                   "available in this version; available: 'digits'")
    if "synthetic" in s.sweep.sources:
        for name in s.generate.generators:
            if name not in RUNNABLE_GENERATORS:
                where = s.generate.weights.get(name, "")
                if where.startswith(("/", ".")) and not Path(where).exists():
                    out.append(f"{file}: generate.weights.{name} = {where!r}: no such path")
                out.append(f"{file}: generate.generators = {name!r}: no runner for it in this "
                           f"version; runnable: {', '.join(RUNNABLE_GENERATORS)}")
    return out
