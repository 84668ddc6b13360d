"""Studies that sweep model size: L(N, D) per (eval set, data source), and
the compute-optimal split of a training budget between them.

N is the model's parameter count and D its training-set size in images,
both from the train manifests; a run's training compute is 3x the model's
measured forward FLOPs per sample times the samples seen (the step rule's
outcome). For a budget C, the best N and D minimize the fitted L(N, D)
subject to C = 3 * F(N) * seen(D), with

    F(N)     forward FLOPs per sample: a power law through the measured models
    seen(D)  samples seen for D training images under the study's step rule:
             batch_size * clamp(epochs * D / batch_size, min_steps, max_steps)

searched over a log grid of N four times beyond the measured sizes each way.
An answer outside the measured grid (of N or of D) carries a note: it rests
on the fitted curve alone.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synscale.analysis.fit import FitError


@dataclass(frozen=True)
class StepRule:
    epochs: float
    batch_size: int
    min_steps: int
    max_steps: int

    def seen(self, images):
        steps = np.clip(self.epochs * np.asarray(images, dtype=float) / self.batch_size,
                        self.min_steps, self.max_steps)
        return self.batch_size * steps

    def images_for(self, seen: float) -> float:
        """Training images whose step count sees `seen` samples; NaN outside
        the rule's range (the floor and the cap make compute flat in D)."""
        lo, hi = self.batch_size * self.min_steps, self.batch_size * self.max_steps
        if not lo < seen < hi:
            return math.nan
        return seen / self.epochs


def flops_law(params: Sequence[float], flops: Sequence[float]) -> tuple[float, float]:
    """(c, gamma) with F(N) = c * N^gamma, through the measured models."""
    n, f = np.log(np.asarray(params, dtype=float)), np.log(np.asarray(flops, dtype=float))
    if np.unique(n).size < 2:
        raise FitError("forward FLOPs were measured for one model size only")
    gamma, log_c = np.polyfit(n, f, 1)
    return math.exp(log_c), float(gamma)


def compute_optimal(fit, flops: tuple[float, float], rule: StepRule, budgets: Sequence[float],
                    grid: int = 400) -> list[dict[str, Any]]:
    """For each budget: the N and D of least predicted loss, and notes."""
    (n_lo, n_hi), (d_lo, d_hi) = fit.n_range, fit.d_range
    ns = np.geomspace(n_lo / 4, n_hi * 4, grid)
    per_sample = 3 * flops[0] * ns ** flops[1]
    out = []
    for budget in budgets:
        ds = np.array([rule.images_for(budget / f) for f in per_sample])
        ok = np.isfinite(ds) & (ds > 0)
        if not ok.any():
            out.append({"budget_flops": budget, "note": "no model size spends this budget under "
                        "the step rule (its floor or cap binds)"})
            continue
        losses = np.where(ok, fit.predict(ns, np.where(ok, ds, 1.0)), np.inf)
        i = int(np.argmin(losses))
        notes = []
        if not n_lo <= ns[i] <= n_hi:
            notes.append(f"N outside the measured {n_lo:.3g}..{n_hi:.3g}")
        if not d_lo <= ds[i] <= d_hi:
            notes.append(f"D outside the measured {d_lo:.3g}..{d_hi:.3g}")
        if i in (0, grid - 1):
            notes.append("at the edge of the searched sizes")
        out.append({"budget_flops": float(budget), "parameters": float(ns[i]),
                    "images": float(ds[i]), "loss": float(losses[i]),
                    "note": "; ".join(notes)})
    return out


def model_size_fits(rows: Sequence[Mapping[str, Any]], group_axes: Sequence[str],
                    rule: StepRule | None, bootstrap: int = 0, seed: int = 0,
                    progress=None) -> list[dict[str, Any]]:
    """One L(N, D) fit per group of rows that differ in model size (and a
    compute-optimal table from it), or the reason there is none."""
    from synscale.analysis.fit import _norm, sort_key
    from synscale.analysis.points import fit_chinchilla_group

    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault(tuple(_norm(r.get(a)) for a in group_axes), []).append(r)
    out = []
    for values in sorted(groups, key=lambda t: sort_key(dict(zip(group_axes, t)))):
        members = groups[values]
        key = dict(zip(group_axes, values))
        if len({(r.get("arch"), r.get("width")) for r in members}) < 2:
            continue  # one model: nothing to fit across N
        if any(r.get("parameters") in (None, "") for r in members):
            out.append({"group": key, "law": "chinchilla", "error": "model sizes unknown: these "
                        "models were trained before synscale recorded parameter counts (launch "
                        "into a new --root to retrain them with it)"})
            continue
        n = np.array([float(r["parameters"]) for r in members])
        d = np.array([float(r["images"]) for r in members])
        loss = np.array([float(r["loss"]) for r in members])
        entry, fit = fit_chinchilla_group(key, n, d, loss, bootstrap, seed, progress)
        if fit is not None and rule is not None:
            try:
                flops = flops_law(n, [float(r["train_flops"]) /
                                      (3 * float(r["steps"]) * rule.batch_size) for r in members])
                spent = [float(r["train_flops"]) for r in members]
                budgets = np.geomspace(min(spent), max(spent), 6)
                entry["compute_optimal"] = compute_optimal(fit, flops, rule, budgets)
                entry["flops_per_sample_law"] = {"c": flops[0], "gamma": flops[1]}
            except FitError as e:
                entry["compute_optimal_error"] = str(e)
        out.append(entry)
    return out
