"""Gather: every finished evaluation of a run into one tidy table.

One row per (train stage, eval set): the sweep coordinates from the plan plus
the metrics the evaluate stage wrote, and the model's size and training
compute from its train manifest. Rows of unfinished stages are left out,
so a partly finished run still gathers what it has.
"""
from __future__ import annotations

import csv
from pathlib import Path

from synscale.analysis.fit import DEFAULT_AXES as AXES
from synscale.plan import state
from synscale.plan.graph import Plan
from synscale.plan.layout import RunDir

COLUMNS = ["train_id", *AXES, "images_per_class", "seed", "images", "kept_share", "steps", "parameters",
           "train_flops", "loss", "top1", "classes"]


def gather(run_root: Path) -> list[dict]:
    run = RunDir(Path(run_root))
    plan = Plan.from_json(run.plan_file.read_text())
    rows = []
    for s in plan.of_kind("evaluate"):
        folder = run.stage("evaluate", s.id)
        if not state.is_done(folder):
            continue
        m = state.read_json(folder / "metrics.json")
        trained = state.read_json(run.stage("train", s.inputs[0]) / "manifest.json")
        seed = plan.by_id[s.inputs[0]].spec.get("seed")  # repeats at one size differ in it
        for axes in (s.axes, *s.also):  # one row per question the model answers
            rows.append({"train_id": s.inputs[0], **{a: axes.get(a, "") for a in AXES},
                         "images_per_class": m["images_per_class"], "seed": seed,
                         "images": m["images"],
                         # a curated set's images over the budget it was drawn from
                         "kept_share": m["images"] / (m["images_per_class"]
                                                      * trained["num_classes"]),
                         "steps": m["steps"],
                         # models trained before these were recorded have none
                         "parameters": trained.get("parameters"),
                         "train_flops": trained.get("train_flops"),
                         "loss": m["loss"], "top1": m["top1"],
                         # the classes the score is over: fewer with [evaluate] partial
                         # (metrics written before either was recorded have none)
                         "classes": m.get("classes_present", m.get("classes_scored")),
                         "per_class_top1": m["per_class_top1"],
                         "per_class_loss": m.get("per_class_loss")})
    rows.sort(key=lambda r: tuple(str(r[a]) for a in AXES) + (r["images_per_class"],))
    return rows


def generation_quality(run_root: Path) -> list[dict]:
    """Recognizability and diversity per generation config (from synthetic packs)."""
    run = RunDir(Path(run_root))
    plan = Plan.from_json(run.plan_file.read_text())
    out = []
    for pack in plan.of_kind("pack"):
        folder = run.stage("pack", pack.id)
        if pack.spec["source"] != "synthetic" or not (folder / "quality.json").exists():
            continue
        gen = plan.by_id[pack.inputs[0]].spec
        out.append({"generator": gen["generator"], "prompts": gen["prompts"],
                    "guidance": gen["guidance"], "steps": gen["steps"],
                    **state.read_json(folder / "quality.json")})
    return sorted(out, key=lambda r: (r["generator"], r["prompts"], r["guidance"]))


def write_csv(rows: list[dict], path: Path) -> None:
    with state.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
