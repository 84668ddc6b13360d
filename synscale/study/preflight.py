"""What must exist before a study may write or submit anything.

`--dry-run` plans a study whose data, weights or cluster live elsewhere; a
real launch checks them here first, so a missing piece stops it before the
run directory exists.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from synscale.study.schema import Study


def problems(s: Study, backend: str, plan=None) -> list[str]:
    """Everything missing, each a line; `plan` (the study's, where planned
    already) says how many images per class the stages read from folders."""
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
    if s.data.dataset == "imagefolder":
        out += folder_problems(s, plan)
    if "synthetic" in s.sweep.sources:
        out += _checkpoints(s)
        captions = s.prompts.captions
        if "in-captions" in s.generate.prompts and captions and not Path(captions).is_file():
            out.append(f"{file}: prompts.captions = {captions!r}: no such file")
    return out


def folder_problems(s: Study, plan=None) -> list[str]:
    """The image folders, from their listings (data/inventory.py): a class
    folder per class holding the images the study reads, and evaluation
    folders whose class folders are the study's classes."""
    from synscale.data import inventory
    from synscale.prompts.classes import of_data
    from synscale.study.specs import DataSpec

    file, d, out = s.path, s.data, []
    for key in ("train_dir", "val_dir"):
        path = getattr(d, key)
        if path and not Path(path).is_dir():
            out.append(f"{file}: data.{key} = {path!r}: no such directory (a folder of "
                       "class folders is expected)")
    for name, folder in s.evaluate.dirs.items():
        if not Path(folder).is_dir():
            out.append(f"{file}: evaluate.dirs.{name} = {folder!r}: no such directory")
    try:
        classes = of_data(DataSpec(d.dataset, classes=d.classes))
    except ValueError as e:
        return out + [f"{file}: data.classes = {d.classes!r}: {e}"]
    need = folder_images_read(s if plan is None else plan)
    if need and Path(d.train_dir).is_dir():
        out += inventory.train_problems(f"{file}: data.train_dir", Path(d.train_dir), classes,
                                        need)
    for name, where, folder in eval_folders(s):
        try:
            expected = expected_classes(name, classes, s.evaluate.masks.get(name))
        except ValueError as e:
            out.append(f"{file}: evaluate.masks.{name}: {e}")
            continue
        if Path(folder).is_dir():
            out += inventory.eval_problems(f"{file}: {where}", Path(folder), classes, expected,
                                           s.evaluate.partial)
    return out


def folder_images_read(s_or_plan) -> int:
    """The most images per class any stage reads from data.train_dir: the
    real pack's rows per class, a caption stage's images per class."""
    from synscale.plan.graph import Plan
    if not isinstance(s_or_plan, Plan):
        from synscale.study.expand import expand
        s_or_plan = expand(s_or_plan)
    return max((st.spec.get("per_class") or 0 for st in s_or_plan.stages
                if (st.kind == "pack" and st.spec.get("source") == "real")
                or st.kind == "caption"), default=0)


def eval_folders(s: Study) -> list[tuple[str, str, str]]:
    """(set name, the key naming its folder, folder) of each folder set."""
    out = []
    for name in s.evaluate.sets:
        if name == "imagenet-val" and s.data.val_dir:
            out.append((name, "data.val_dir", s.data.val_dir))
        elif name in s.evaluate.dirs:
            out.append((name, f"evaluate.dirs.{name}", s.evaluate.dirs[name]))
    return out


def expected_classes(name: str, classes, mask_file: str | None = None) -> set[int] | None:
    """The classes a set is scored on: a subset's (ImageNet-R, -A, a mask
    file's), or all (None)."""
    from synscale.data.evalsets import class_mask
    mask = class_mask(name, classes, mask_file)  # ValueError: it names none of them
    return None if mask is None else {i for i, m in enumerate(mask) if m}


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
