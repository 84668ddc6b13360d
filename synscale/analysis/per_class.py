"""Per-class scaling: a power law per class and series, and each class
labelled by explicit criteria (the study's [analysis] keys):

    easy     top-1 at the series' smallest size >= easy_top1: learned from
             the first images on, so its curve has little left to show
    scaling  not easy, and its loss falls with size at k >= scaling_k
    poor     neither: more data of this source does little for the class

Fan et al. (2024) read synthetic data's weak spots this way; the same class
can be scaling on real data and poor on generated data.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synscale.analysis.fit import FitError, fit_power

CATEGORIES = ("easy", "scaling", "poor")


@dataclass(frozen=True)
class Criteria:
    easy_top1: float = 0.9
    scaling_k: float = 0.3

    def describe(self) -> str:
        return (f"easy: top-1 >= {self.easy_top1:g} at the smallest size; scaling: otherwise "
                f"k >= {self.scaling_k:g}; poor: neither")


@dataclass(frozen=True)
class ClassVerdict:
    index: int
    name: str
    k: float | None            # the class's power-law exponent of loss vs size
    top1_at_smallest: float | None
    category: str
    note: str = ""             # why k is missing

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.index, "name": self.name, "k": self.k,
                "top1_at_smallest": self.top1_at_smallest, "category": self.category,
                **({"note": self.note} if self.note else {})}


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def classify(rows: Sequence[Mapping[str, Any]], names: Sequence[str], criteria: Criteria,
             x: str = "images_per_class") -> list[ClassVerdict]:
    """Verdicts for every class from one series' rows (each with per-class
    top-1 and loss lists)."""
    sizes = np.array([float(r[x]) for r in rows])
    smallest = sizes.min()
    out = []
    for c, name in enumerate(names):
        top1 = _mean(r["per_class_top1"][c] for r, s in zip(rows, sizes) if s == smallest)
        losses = [r["per_class_loss"][c] if r.get("per_class_loss") else None for r in rows]
        keep = [i for i, v in enumerate(losses) if v is not None]
        k, note = None, ""
        try:
            if not keep:
                raise FitError("no per-class loss recorded (evaluated before synscale kept it)")
            k = fit_power(sizes[keep], [losses[i] for i in keep]).params["k"]
        except FitError as e:
            note = str(e)
        if top1 is None:
            category = "poor"
            note = note or "the evaluation set has no images of this class"
        elif top1 >= criteria.easy_top1:
            category = "easy"
        elif k is not None and k >= criteria.scaling_k:
            category = "scaling"
        else:
            category = "poor"
        out.append(ClassVerdict(c, name, k, top1, category, note))
    return out


def summarize(verdicts: Sequence[ClassVerdict]) -> dict[str, Any]:
    return {"counts": {c: sum(v.category == c for v in verdicts) for c in CATEGORIES},
            "classes": {c: [v.name for v in verdicts if v.category == c] for c in CATEGORIES}}
