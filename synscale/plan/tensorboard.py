"""The run directory's `tensorboard/`: every training of the study as a
TensorBoard run named by its axes, so that

    tensorboard --logdir runs/<study>/tensorboard

shows them all, live. A training's folder there holds links to the event
files its stages write (runtime/curves.py), which live in the stage folders
(in the run directory or the store, shared by the studies that plan them):

    tensorboard/synthetic,embedded-ddpm,classnames,guidance=4.0,vit,width=64,n=256,seed=0/
        train -> ../../stages/train/<id>/tensorboard
        eval-digits-test -> ../../stages/evaluate/<id>/tensorboard

Links are made for a stage before it runs, so a training's curve shows
while it trains. A launch adds what is new and removes what the plan no
longer has: one listing when nothing changed, whatever the study's size.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from synscale.plan import state
from synscale.plan.graph import Plan
from synscale.plan.layout import RunDir
from synscale.runtime.curves import FOLDER

# axes shown by value alone (their values say what they are)
_BY_VALUE = ("source", "generator", "prompts", "curation", "arch")
# the order they are named in, whatever order a plan's dict has (plan.json sorts keys)
_ORDER = ("source", "generator", "prompts", "guidance", "synthetic_share", "curation", "arch",
          "width", "images_per_class")


def run_name(axes: dict, seed) -> str:
    """The TensorBoard run of a training: its non-empty axes, then its seed."""
    parts = []
    keys = [k for k in _ORDER if k in axes] + sorted(set(axes) - set(_ORDER))
    for key, value in ((k, axes[k]) for k in keys):
        if value in ("", None):
            continue
        if key == "images_per_class":
            key = "n"
        elif key == "synthetic_share":
            key = "share"
        parts.append(str(value) if key in _BY_VALUE else f"{key}={value}")
    parts.append(f"seed={seed}")
    return ",".join(parts).replace("/", "-")


def links(run: RunDir, plan: Plan) -> dict[str, dict[str, Path]]:
    """{run name: {link name: the stage's event folder}} of every training."""
    out: dict[str, dict[str, Path]] = {}
    named: dict[str, str] = {}
    for s in plan.stages:
        if s.kind != "train":
            continue
        name = run_name(s.axes, s.spec.get("seed"))
        if name in out:  # the same axes twice (cannot happen in a planned study): keep apart
            name = f"{name},{s.id}"
        out[name] = {"train": run.stage("train", s.id) / FOLDER}
        named[s.id] = name
    for s in plan.stages:
        if s.kind == "evaluate" and s.inputs and s.inputs[0] in named:
            label = "eval-" + "-".join(str(s.axes[k]) for k in ("eval_set", "templates")
                                       if s.axes.get(k))
            out[named[s.inputs[0]]][label.replace("/", "-")] = \
                run.stage("evaluate", s.id) / FOLDER
    return out


def update(run: RunDir, plan: Plan) -> None:
    """Bring `tensorboard/` to the plan: remove the gone trainings, make the
    missing ones' folders (whole, under a temporary name, then renamed) and
    add or drop links in the others. `.links` records what was made, so a
    relaunch of the same plan reads one file and touches nothing."""
    import hashlib
    import json

    root = run.root / "tensorboard"
    root.mkdir(exist_ok=True)
    wanted = {name: {k: os.path.relpath(t, root / name) for k, t in v.items()}
              for name, v in links(run, plan).items()}
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
    record = root / ".links"
    if record.is_file() and record.read_text().strip() == digest:
        return
    have = set(os.listdir(root)) - {record.name}
    for name in have - set(wanted):
        target = root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    for name, made in wanted.items():
        folder = root / name
        if name in have:  # an evaluation set added or dropped since
            now = {p.name: os.readlink(p) for p in folder.iterdir() if p.is_symlink()}
            for link in now.keys() - made.keys():
                (folder / link).unlink()
            for link, target in made.items():
                if now.get(link) != target:  # new, or its stage moved to a store
                    (folder / link).unlink(missing_ok=True)
                    os.symlink(target, folder / link)
            continue
        tmp = root / f".{name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for link, target in made.items():
            os.symlink(target, tmp / link)
        os.replace(tmp, folder)
    state.write_text(record, digest + "\n")
