"""What must exist before a study may write or submit anything.

`--dry-run` plans a study whose data, weights or cluster live elsewhere; a
real launch checks them here first, so a missing piece stops it before the
run directory exists.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from synscale.study.schema import Study


def problems(s: Study, backend: str) -> list[str]:
    file = s.path
    out = []
    if backend == "slurm":
        from synscale.backends.profile import check_resources, load_profile

        if shutil.which("sbatch") is None:
            out.append(f"{file}: backend.name = 'slurm': no sbatch on PATH; this machine is not "
                       "a Slurm login node (use --backend local to run here)")
        else:
            from synscale.backends.slurmctl import ping

            down = ping()  # before anything is written: a launch that cannot submit stops here
            if down:
                out.append(f"{file}: backend.name = 'slurm': the Slurm controller does not "
                           f"answer ({down}); launch again once `scontrol ping` says UP")
        profile, found = load_profile(s.backend.profile, file)
        out += found + (check_resources(s.resources, profile, file) if profile else [])
    d = s.data
    if d.dataset == "imagefolder":
        for key in ("train_dir", "val_dir"):
            path = getattr(d, key)
            if path and not Path(path).is_dir():
                out.append(f"{file}: data.{key} = {path!r}: no such directory (a folder of "
                           "class folders is expected)")
        for name, folder in s.evaluate.dirs.items():
            if not Path(folder).is_dir():
                out.append(f"{file}: evaluate.dirs.{name} = {folder!r}: no such directory")
        if "real" in s.sweep.sources and Path(d.train_dir).is_dir():
            out += _class_folders(s)
    if "synthetic" in s.sweep.sources:
        out += _checkpoints(s)
        captions = s.prompts.captions
        if "in-captions" in s.generate.prompts and captions and not Path(captions).is_file():
            out.append(f"{file}: prompts.captions = {captions!r}: no such file")
    return out


def _class_folders(s: Study) -> list[str]:
    """Each class of the study needs its folder in data.train_dir."""
    from synscale.data.folders import class_key
    from synscale.prompts.classes import of_data
    from synscale.study.specs import DataSpec

    try:
        keys = [class_key(c) for c in of_data(DataSpec(s.data.dataset, classes=s.data.classes))]
    except ValueError as e:
        return [f"{s.path}: data.classes = {s.data.classes!r}: {e}"]
    missing = [k for k in keys if not (Path(s.data.train_dir) / k).is_dir()]
    if not missing:
        return []
    return [f"{s.path}: data.train_dir = {s.data.train_dir!r}: no folder for {len(missing)} of "
            f"{len(keys)} classes, e.g. {', '.join(missing[:5])} (class folders are named by "
            "wnid, or by class name for class lists without wnids)"]


def _checkpoints(s: Study) -> list[str]:
    """Every checkpoint a generate stage will load, found now: compute nodes
    often have no network, and a missing one must stop the launch here."""
    from synscale.generators.weights import WeightsError, resolve

    file, g, out = s.path, s.generate, []
    refs = []
    for name in g.generators:
        if name != "embedded-ddpm":
            w = g.weights.get(name, "")
            for i, ref in enumerate([w] if isinstance(w, str) else w):
                refs.append((f"generate.weights.{name}" + (f"[{i}]" if not isinstance(w, str)
                                                          else ""), ref))
    if "in-captions" in g.prompts and not s.prompts.captions:
        refs.append(("prompts.caption_model", s.prompts.caption_model))
    if "word2sen" in g.prompts:
        refs.append(("prompts.word2sen_model", s.prompts.word2sen_model))
    for key in ("score_classifier", "score_clip_model"):
        if getattr(g, key):
            refs.append((f"generate.{key}", getattr(g, key)))
    for key, ref in refs:
        try:
            resolve(ref)
        except WeightsError as e:
            out.append(f"{file}: {key} = {ref!r}: {str(e).split(': ', 1)[1]}")
    return out
