"""Grids for the analyses beyond one curve per series: per-class verdicts
and L(N, D) fits with their compute-optimal splits (same Grid as the other
tables, so terminal and summary.md agree)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from synscale.report.tables import MISSING, Grid, fmt_size, series_labels, shared_label

SHOWN_CLASSES = 8  # names listed per category; the JSON has them all


def per_class_grid(per_class: Sequence[Mapping[str, Any]], rule: str) -> Grid:
    keys = [p["key"] for p in per_class]
    shared = shared_label(keys)
    grid = Grid(title="Classes by how they scale" + (f" ({shared})" if shared else ""),
                headers=["series", "easy", "scaling", "poor"], rows=[], caption=rule)
    for p, label in zip(per_class, series_labels(keys)):
        grid.rows.append([label, *(str(p["counts"][c]) for c in ("easy", "scaling", "poor"))])
        poor = p["classes"]["poor"]
        if poor:
            grid.notes.append(f"{label}: poor: " + ", ".join(poor[:SHOWN_CLASSES])
                              + (f" and {len(poor) - SHOWN_CLASSES} more"
                                 if len(poor) > SHOWN_CLASSES else ""))
    return grid


def _sci(v: float) -> str:
    return f"{v:.3g}"


def model_size_grids(fits: Sequence[Mapping[str, Any]]) -> list[Grid]:
    """The L(N, D) fits in one grid (a row per group of series that differ
    in model size), then each fit's compute-optimal split."""
    if not fits:
        return []
    keys = [f["group"] for f in fits]
    labels, shared = series_labels(keys), shared_label(keys)
    with_se = any("se" in f for f in fits)
    grid = Grid(title="L(N, D) = E + A/N^alpha + B/D^beta" + (f" ({shared})" if shared else ""),
                headers=["series", "E", "A", "alpha", "B", "beta", "rmse (log)", "N", "D"],
                rows=[], caption=("± bootstrap standard error; " if with_se else "")
                + "N: parameters, D: training images (measured ranges)")
    grids = [grid]
    for f, label in zip(fits, labels):
        if "params" not in f:
            grid.rows.append([label, "failed"] + [MISSING] * 7)
            grid.notes.append(f"{label}: {f['error']}")
            continue
        p = f["params"]
        grid.rows.append([label] + [f"{p[k]:.4g}" + (f" ± {f['se'][k]:.2g}" if "se" in f else "")
                                    for k in ("E", "A", "alpha", "B", "beta")]
                         + [f"{f['rmse']:.4f}",
                            f"{_sci(f['n_range'][0])}..{_sci(f['n_range'][1])}",
                            f"{fmt_size(f['d_range'][0])}..{fmt_size(f['d_range'][1])}"])
        if f.get("compute_optimal_error"):
            grid.notes.append(f"{label}: no compute-optimal split: {f['compute_optimal_error']}")
        if f.get("compute_optimal"):
            grids.append(_optimal_grid(f["compute_optimal"], label))
    return grids


def _optimal_grid(optimal: Sequence[Mapping[str, Any]], label: str) -> Grid:
    grid = Grid(title=f"Compute-optimal split ({label})",
                headers=["training FLOPs", "parameters N", "images D", "loss", "note"], rows=[],
                caption="argmin L(N, D) subject to 3 * forward FLOPs(N) * samples seen(D) = "
                        "budget, under the study's step rule")
    for o in optimal:
        if "parameters" not in o:
            grid.rows.append([_sci(o["budget_flops"]), MISSING, MISSING, MISSING, o["note"]])
        else:
            grid.rows.append([_sci(o["budget_flops"]), _sci(o["parameters"]),
                              fmt_size(o["images"]), f"{o['loss']:.4f}", o["note"]])
    return grid
