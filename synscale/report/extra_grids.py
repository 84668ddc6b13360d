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
    """One grid per L(N, D) fit: its parameters, then the best split per budget."""
    grids = []
    for f in fits:
        context = ", ".join(f"{k}={v}" for k, v in f["group"].items() if v is not None)
        title = "L(N, D) = E + A/N^alpha + B/D^beta" + (f" ({context})" if context else "")
        if "params" not in f:
            grids.append(Grid(title=title, headers=["fit"], rows=[["failed"]],
                              notes=[f["error"]]))
            continue
        p = f["params"]
        cells = [f"{p[k]:.4g}" + (f" ± {f['se'][k]:.2g}" if "se" in f else "")
                 for k in ("E", "A", "alpha", "B", "beta")]
        grid = Grid(title=title, headers=["E", "A", "alpha", "B", "beta", "rmse (log)"],
                    rows=[cells + [f"{f['rmse']:.4f}"]],
                    caption=("± bootstrap standard error; " if "se" in f else "")
                    + f"N: parameters {fmt_size(f['n_range'][0])}..{fmt_size(f['n_range'][1])}, "
                      f"D: training images {fmt_size(f['d_range'][0])}..{fmt_size(f['d_range'][1])}")
        grids.append(grid)
        optimal = f.get("compute_optimal")
        if not optimal:
            if f.get("compute_optimal_error"):
                grid.notes.append(f"compute-optimal split: {f['compute_optimal_error']}")
            continue
        table = Grid(title="Compute-optimal split" + (f" ({context})" if context else ""),
                     headers=["training FLOPs", "parameters N", "images D", "loss", "note"],
                     rows=[], caption="argmin L(N, D) subject to 3 * forward FLOPs(N) * "
                                      "samples seen(D) = budget, under the study's step rule")
        for o in optimal:
            if "parameters" not in o:
                table.rows.append([_sci(o["budget_flops"]), MISSING, MISSING, MISSING, o["note"]])
                continue
            table.rows.append([_sci(o["budget_flops"]), _sci(o["parameters"]),
                               fmt_size(o["images"]), f"{o['loss']:.4f}", o["note"]])
        grids.append(table)
    return grids
