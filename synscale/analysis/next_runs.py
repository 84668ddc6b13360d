"""Where to measure next, for a run: tools/fit_curves.py RUN_DIR --suggest.

The run's finished evaluations give the fits (analysis/suggest.py's units)
and the headline quantities; the study's candidate additions
(plan/additions.py) give the points each would measure and its cost. The
ranking is by expected narrowing of the headline intervals per device-hour
(GPU-hours where the study's stages get GPUs, CPU-hours otherwise).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from synscale.analysis import suggest
from synscale.analysis.fit import DEFAULT_AXES, _norm, comparable, fit_series
from synscale.study.schema import SIZE_KEYS

SIZE_AXES = tuple(a for a in DEFAULT_AXES if a not in ("arch", "width"))


def _series_key(axes: dict) -> tuple:
    return ("series", tuple(_norm(axes.get(a, "")) for a in DEFAULT_AXES))


def _group_key(axes: dict) -> tuple:
    return ("group", tuple(_norm(axes.get(a, "")) for a in SIZE_AXES))


def headline(rows: list[dict], law: str) -> tuple[dict, list, dict]:
    """(units, quantities, labels of the series) from the gathered rows."""
    fits = [f for f in fit_series(rows, law=law, laws=[law]) if f.fit is not None]
    labels = dict(zip((_series_key(f.key) for f in fits), _labels([f.key for f in fits])))
    units, quantities = {}, []
    for f in fits:
        key = _series_key(f.key)
        units[key] = suggest.series_unit(key, f.x, f.y, law, f.fit.params)
        quantities.append(suggest.exponent(f"k  {labels[key]}", key))
    for real in (f for f in fits if f.source == "real"):
        for syn in (f for f in fits if f.source not in (None, "real")):
            if comparable(real.key, syn.key):
                quantities.append(suggest.multiplier(
                    f"x{real.fit.x_max:g}  {labels[_series_key(syn.key)]}",
                    _series_key(real.key), _series_key(syn.key), real.fit.x_max))
    groups = _groups(rows)
    # a group's key: its SIZE_AXES values; labelled like the series, by what varies
    named = _labels([{a: v for a, v in zip(SIZE_AXES, key[1]) if v not in ("", None)}
                     for key in groups])
    for (key, unit), name in zip(groups.items(), named):
        units[key] = unit
        quantities.append(suggest.exponent(f"alpha  {name}", key, "alpha"))
    return units, quantities, labels


def _labels(keys: list[dict]) -> list[str]:
    """Short series labels: the source, then the axes that tell series apart
    among those that have them (a real series has no guidance); where that
    leaves two alike (a curated and a plain series of one config), every
    axis that differs, having it or not included. Quantities are keyed by
    these labels, so they must not repeat."""
    def labelled(present_only: bool) -> list[str]:
        varying = [a for a in DEFAULT_AXES if a != "source" and len(
            {str(k.get(a)) for k in keys if not present_only or k.get(a) is not None}) > 1]
        return [" ".join([str(k.get("source"))] + [f"{a}={k.get(a)}" for a in varying
                                                   if k.get(a) is not None or not present_only])
                for k in keys]
    short = labelled(True)
    return short if len(set(short)) == len(short) else labelled(False)


def _groups(rows: list[dict]) -> dict:
    """L(N, D) of each group with three model sizes or more (as the summary fits it)."""
    import numpy as np

    from synscale.analysis.chinchilla import fit_chinchilla
    from synscale.analysis.fit import FitError
    members: dict[tuple, list] = {}
    for r in rows:
        members.setdefault(_group_key(r), []).append(r)
    out = {}
    for key, rs in members.items():
        if len({(r.get("arch"), r.get("width")) for r in rs}) < 3 or \
                any(r.get("parameters") in (None, "") for r in rs):
            continue
        n, d, y = (np.array([float(r[c]) for r in rs]) for c in ("parameters", "images", "loss"))
        try:
            out[key] = suggest.group_unit(key, n, d, y, fit_chinchilla(n, d, y))
        except FitError:
            continue
    return out


def _measured(plan, units: dict, study) -> Counter:
    """(unit key, point) of every evaluation a plan makes, with multiplicity:
    a size for a series, (parameters, images) for an L(N, D) group."""
    from synscale.plan import footprint
    out: Counter = Counter()
    for s in plan.of_kind("evaluate"):
        t = plan.by_id[s.inputs[0]].spec
        for axes in (s.axes, *s.also):
            n = axes["images_per_class"]
            if _series_key(axes) in units:
                out[(_series_key(axes), n)] += 1
            if _group_key(axes) in units:
                size = footprint.model_size(t["model"], t["num_classes"],
                                            footprint.image_shape(study))
                out[(_group_key(axes), (size.params, n * t["num_classes"]))] += 1
    return out


def _points(addition, base: Counter, units: dict, study) -> dict[tuple, list]:
    """The points the edited plan measures beyond the run's: stages it redoes
    (an edit that changes what they compute) measure a point again, not one
    more."""
    adds: dict[tuple, list] = {}
    for (key, point), count in (_measured(addition.plan, units, study) - base).items():
        adds.setdefault(key, []).extend([point] * count)
    return adds


def device_unit(study, backend: str) -> str:
    from synscale.plan import footprint
    kinds = ("generate", "train", "evaluate")
    return "gpu" if any(footprint.devices(study, k, backend)[0] == "gpu" for k in kinds) else "cpu"


def suggest_run(run_root: Path, budget: float | None = None, n_draws: int = suggest.DRAWS,
                seed: int = 0, backend: str | None = None, console=None) -> dict:
    from synscale.analysis.bootstrap import progress_bar
    from synscale.analysis.gather import gather
    from synscale.plan import additions, cost
    from synscale.plan.layout import RunDir
    from synscale.study.expand import expand
    from synscale.study.load import load_study

    run = RunDir(Path(run_root))
    study = load_study(run.study_file)
    backend = backend or ("slurm" if (run.root / "slurm").is_dir() else study.backend.name)
    unit = device_unit(study, backend)
    calibration = cost.read_calibration(run.root / "calibration.json")
    rows = gather(run.root)
    units, quantities, _ = headline(rows, study.analysis.law)
    planned = expand(study)
    found = additions.expand_all(study, planned, additions.edits(study), backend, calibration)
    base = _measured(planned, units, study)
    candidates, refused = [], []
    for a in found:
        if a.error:
            refused.append({"label": a.edit.label, "error": a.error})
            continue
        trainings = sum(s.kind == "train" for s in a.new)
        candidates.append(suggest.Candidate(a.edit.label, _points(a, base, units, study),
                                            a.hours[f"{unit}_hours"],
                                            {"edit": a.edit, "trainings": trainings,
                                             "note": _note(a, units, study)}))
    with progress_bar(console, len(candidates)) as tick:
        now, outcomes = suggest.rank(units, quantities, candidates, n_draws, seed, tick)
    chosen = _choose(outcomes, budget)
    return {"unit": unit, "backend": backend, "calibrated": bool(calibration),
            "budget": budget, "draws": n_draws, "seed": seed, "headline": now,
            "outcomes": outcomes, "refused": refused, "chosen": chosen,
            "lines": additions.lines(study, [o.candidate.meta["edit"] for o in chosen])}


def _note(addition, units: dict, study) -> str:
    if addition.redone:
        return (f"redoes {addition.redone} of the run's trainings: the edit changes what they "
                "compute")
    e = addition.edit
    if e.key == SIZE_KEYS["real"] and study.data.dataset == "imagefolder" and \
            e.value > max(study.sweep.real_images_per_class):
        return (f"needs {e.value} images in every class folder of data.train_dir (not checked "
                "here; ImageNet-1k has 732 to 1,300 a class)")
    if e.kind != "width":
        return ""
    if any(k[0] == "group" for k in units):
        return "new series at this width; narrows the L(N, D) exponent"
    widths = len(study.model.width) + 1
    return ("new series at this width; " + ("makes L(N, D) fittable (3 model sizes)"
                                           if widths >= 3 else "no headline interval it narrows"))


def _choose(outcomes: list, budget: float | None) -> list:
    """Within the budget, the best per hour first (each at most once); without
    one, the best alone. Nothing that is not expected to narrow."""
    picked, left = [], budget if budget is not None else math.inf
    for o in outcomes:
        if not (o.mean > 0 and math.isfinite(o.per_hour)) or o.candidate.hours > left:
            continue
        picked.append(o)
        left -= o.candidate.hours
        if budget is None:
            break
    return picked


def as_json(result: dict) -> dict:
    chosen = {id(o) for o in result["chosen"]}
    return {**{k: result[k] for k in ("unit", "backend", "calibrated", "budget", "draws", "seed",
                                      "headline", "refused", "lines")},
            "candidates": [{"label": o.candidate.label, "kind": o.candidate.meta["edit"].kind,
                            "hours": o.candidate.hours,
                            "trainings": o.candidate.meta["trainings"],
                            "narrowing": o.narrowing, "mean": o.mean,
                            "per_hour": o.per_hour if math.isfinite(o.per_hour) else None,
                            "chosen": id(o) in chosen, "note": o.candidate.meta["note"]}
                           for o in result["outcomes"]]}
