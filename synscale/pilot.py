"""`launch STUDY --pilot`: a shrunk copy of the study, run on the chosen
backend under runs/<study>/pilot/, whose stages measure this cluster's
rates; they go to runs/<study>/calibration.json, which the dry-run's cost
reads (plan/cost.py).

The copy keeps what sets a stage's speed and cuts what only multiplies
stages: every generation config (generator, steps, guidance, precision,
batch) for the first PILOT_CLASSES classes and the smallest size, each pack
reading them, every model trained PILOT_STEPS steps at the smallest real and
synthetic size, and each evaluation on the classes kept. Rates are taken
where start-up weighs least: the sampler's own seconds (generate), the
writer's (pack), the training loop's (train); evaluations by their whole
stage, which makes their rate low (on the safe side) at pilot sizes.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from synscale.plan import cost, state
from synscale.plan.layout import RunDir

PILOT_CLASSES = 2
PILOT_STEPS = 20


def shrink(study, folder: Path):
    """The pilot's study: the same configs, few classes, sizes and steps."""
    s = study.sweep
    smallest = lambda sizes: tuple(sorted(sizes)[:1])  # noqa: E731
    sweep = replace(s, real_images_per_class=smallest(s.real_images_per_class),
                    synthetic_images_per_class=smallest(s.synthetic_images_per_class))
    data = study.data
    if data.dataset != "digits":  # a class file of the first few classes
        from synscale.data.folders import class_key
        from synscale.prompts.classes import of_data
        folder.mkdir(parents=True, exist_ok=True)
        from synscale.study.specs import DataSpec
        keys = [class_key(c) for c in of_data(DataSpec(data.dataset,
                                                       classes=data.classes))[:PILOT_CLASSES]]
        state.write_text(folder / "classes.txt", "\n".join(keys) + "\n")
        data = replace(data, classes=str(folder / "classes.txt"))
    return replace(study, study=replace(study.study, name="pilot"), data=data, sweep=sweep,
                   generate=replace(study.generate, classes_per_task=10**6),
                   train=replace(study.train, min_steps=PILOT_STEPS, max_steps=PILOT_STEPS))


def rates(plan, run: RunDir, study, backend: str) -> dict:
    """Per-device rates from the pilot's finished stages (cost.estimate's units)."""
    from synscale.plan import footprint

    def devices(kind: str) -> int:
        return footprint.devices(study, kind, backend)[1]

    shape = footprint.image_shape(study)
    out: dict = {"generate": {}, "train": {}, "evaluate": {}}
    trained, hosts, packs = {}, set(), []
    for s in plan.stages:
        folder = run.stage(s.kind, s.id)
        done = state.read_json(folder / "DONE") if state.is_done(folder) else None
        if done is None:
            continue
        attempt = folder / "attempt.json"
        if attempt.exists():
            hosts.add(state.read_json(attempt).get("host"))
        if s.kind == "generate" and done.get("render_seconds"):
            out["generate"][cost.generate_key(s.spec)] = \
                done["images_rendered"] / done["render_seconds"]
        elif s.kind == "pack" and done.get("write_seconds"):
            packs.append((done["rows"], done["write_seconds"] * devices("pack")))
        elif s.kind == "train" and done.get("loop_seconds"):
            key = cost.model_key(s.spec["model"], shape)
            trained[s.id] = key
            out["train"][key] = done["loop_steps"] * done["samples_per_step"] \
                / done["loop_seconds"] / devices("train")
        elif s.kind == "evaluate" and done.get("images") and s.inputs[0] in trained:
            out["evaluate"][trained[s.inputs[0]]] = done["images"] / done["seconds"] \
                / devices("evaluate")
    if packs:
        out["pack_per_cpu"] = _marginal_rate(packs)
    return {"rates": out, "hosts": sorted(h for h in hosts if h)}


def _marginal_rate(points: list[tuple[float, float]]) -> float:
    """Rows per CPU-second from (rows, CPU-seconds) of packs: the slope's
    inverse where packs of different sizes allow one (FFCV's writer pays a
    start-up of seconds that a pilot-sized pack would take for its rate),
    else the largest pack's plain rate."""
    import numpy as np
    rows, secs = np.array(points, dtype=float).T
    if len(set(rows)) > 1:
        slope = np.polyfit(rows, secs, 1)[0]
        if slope > 0:
            return float(1 / slope)
    i = int(np.argmax(rows))
    return float(rows[i] / secs[i])


def run(study, root: Path, backend: str, console, as_json: bool) -> int:
    from synscale.study.expand import expand

    home = RunDir(root / study.study.name)
    pilot = shrink(study, home.root / "pilot-data")
    plan = expand(pilot)
    run_dir = RunDir(home.root / "pilot")
    started = time.time()
    state.write_text(run_dir.study_file, study.text)
    from synscale.plan import stored
    stored.write_plan(run_dir, plan)
    if backend == "slurm":
        failed = _on_slurm(pilot, plan, run_dir, console)
    else:
        from synscale.backends.local import run_plan
        failed = len(run_plan(plan, run_dir, study.backend.workers).failed)
    measured = rates(plan, run_dir, pilot, backend)
    calibration = {"version": 1, "date": time.strftime("%Y-%m-%d %H:%M"),
                   "backend": backend, "hardware": {"device": _device(backend, pilot),
                                                    "hosts": measured["hosts"]},
                   "pilot_seconds": round(time.time() - started, 1), "rates": measured["rates"],
                   "stages": len(plan.stages), "failed": failed}
    state.write_json(home.root / "calibration.json", calibration)
    if as_json:
        print(json.dumps(calibration))
    else:
        console.print(f"pilot: {len(plan.stages)} stages in {calibration['pilot_seconds']:.0f} s"
                      f"{f', {failed} failed' if failed else ''}; rates in "
                      f"{home.root / 'calibration.json'} (--dry-run costs the study with them)")
    return 1 if failed else 0


def _device(backend: str, study) -> str:
    from synscale.study.schema import Resources
    if backend == "slurm":
        res = study.resources.get("train") or Resources()
        return f"slurm, {res.gpus} GPU(s) per train node" if res.gpus else "slurm, CPU"
    import platform
    return f"local CPU ({platform.processor() or platform.machine()})"


def _on_slurm(pilot, plan, run_dir: RunDir, console) -> int:
    """Submit the pilot's plan and wait for it (status refreshes in place)."""
    from synscale.backends import code
    from synscale.backends.profile import load_profile
    from synscale.backends.slurm import submit_plan
    from synscale.status import collect, watch

    profile, _ = load_profile(pilot.backend.profile, pilot.path)
    pinned = code.snapshot(run_dir.root)
    submit_plan(plan, run_dir, pilot, profile, code_dir=pinned.folder)
    info = watch(run_dir, console) if console.is_terminal else _wait(run_dir, collect)
    return sum(c["failed"] + c["blocked"] for c in info["kinds"].values())


def _wait(run_dir: RunDir, collect) -> dict:
    from synscale.status import finished
    while not finished(info := collect(run_dir)):
        time.sleep(5)
    return info
