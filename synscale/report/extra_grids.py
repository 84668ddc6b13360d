"""Grids for the analyses beyond one curve per series: per-class verdicts
and L(N, D) fits with their compute-optimal splits (same Grid as the other
tables, so terminal and summary.md agree)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synscale.report.grid import MISSING, Grid, fmt_size, series_labels, shared_label

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
    # 95% percentile intervals, as the series table: an ill-determined term's
    # bootstrap is far from normal (A's standard error can reach 1e70 while
    # half its draws sit within 10x of the fit), so a standard error misleads
    with_ci = any("ci95" in f for f in fits)
    grid = Grid(title="L(N, D) = E + A/N^alpha + B/D^beta" + (f" ({shared})" if shared else ""),
                headers=["series", "E", "A", "alpha", "B", "beta", "rmse (log)", "N", "D"],
                rows=[], caption=("(lo-hi): bootstrap 95% interval; " if with_ci else "")
                + "N: parameters, D: training images (measured ranges)")
    grids = [grid]
    for f, label in zip(fits, labels):
        if "params" not in f:
            grid.rows.append([label, "failed"] + [MISSING] * 7)
            grid.notes.append(f"{label}: {f['error']}")
            continue
        p = f["params"]
        grid.rows.append([label] + [f"{p[k]:.4g}" + ("\n({:.3g}-{:.3g})".format(*f["ci95"][k])
                                                     if "ci95" in f else "")
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


def curation_grid(deltas: Sequence[Mapping[str, Any]]) -> Grid | None:
    """Each curation setting at the largest size it was trained at: the
    change in loss (top-1 below it) per eval set against its baseline, the
    share kept, and the mean over eval sets."""
    if not deltas:
        return None
    largest: dict[tuple, Mapping] = {}
    for d in deltas:
        key = tuple((a, d[a]) for a in d if a not in ("images_per_class", "eval_sets",
                                                      "kept_share", "mean_delta_loss",
                                                      "mean_delta_top1"))
        if key not in largest or float(d["images_per_class"]) > float(largest[key]["images_per_class"]):
            largest[key] = d
    shown = list(largest.values())
    sets = sorted({e for d in shown for e in d["eval_sets"]}, key=str)
    context = [{a: d[a] for a in ("source", "generator", "prompts", "guidance",
                                  "synthetic_share", "arch", "width")} for d in shown]
    varies = len({tuple(c.items()) for c in context}) > 1
    labels = series_labels(context) if varies else [""] * len(context)
    shared = shared_label(context)
    grid = Grid(title="Curation: change against the unfiltered set (largest size of each"
                + (f"; {shared})" if shared else ")"),
                headers=["setting", "images/class", "kept"] + [f"{e}\nΔloss (Δtop-1)" for e in sets]
                + ["mean\nΔloss (Δtop-1)"], rows=[],
                caption="Δ: curated minus its baseline (the same source, model and size "
                        "unfiltered; a leave-one-out set against its whole pool); "
                        "negative Δloss: curation helped")
    for d, label in zip(shown, labels):
        cells = [f"{d['curation']} ({label})" if label else d["curation"],
                 fmt_size(float(d["images_per_class"])),
                 f"{d['kept_share']:.0%}" if d["kept_share"] == d["kept_share"] else MISSING]
        for e in sets:
            x = d["eval_sets"].get(e)
            cells.append(f"{x['delta_loss']:+.4f} ({x['delta_top1']:+.1%})" if x else MISSING)
        cells.append(f"{d['mean_delta_loss']:+.4f} ({d['mean_delta_top1']:+.1%})")
        grid.rows.append(cells)
    return grid


def holdout_grid(checks: Sequence[Mapping[str, Any]]) -> Grid | None:
    """Each series' largest size left out: what each law, fitted on the
    rest, predicted there, and whether the measurement fell in its band."""
    if not checks:
        return None
    keys = [c["key"] for c in checks]
    laws = list(dict.fromkeys(law for c in checks for law in c["checks"]))
    shared = shared_label(keys)
    grid = Grid(title="How far the law holds: the largest size left out"
                      + (f" ({shared})" if shared else ""),
                headers=["series", "left out", "measured"] + [f"{law}\npredicted" for law in laws]
                + ["closest"], rows=[],
                caption="predicted from the smaller sizes (error vs measured); in: the "
                        "measurement lies in the 95% prediction band, OUT: it does not; "
                        f"{MISSING}: too few sizes for that law")
    for c, label in zip(checks, series_labels(keys)):
        cells = [label, fmt_size(c["size"]), f"{c['measured']:.4f}"]
        for law in laws:
            h = c["checks"].get(law)
            cells.append(MISSING if h is None else
                         f"{h.predicted:.4f} ({h.error:+.0%}) {'in' if h.inside else 'OUT'}")
        grid.rows.append(cells + [c["favors"] or MISSING])
    return grid


def suggestion_grid(result: Mapping[str, Any]) -> Grid:
    """tools/fit_curves.py --suggest: candidate additions, best per device-hour first."""
    unit = f"{result['unit'].upper()}-h"
    n = len(result["headline"])
    budget = result["budget"]
    grid = Grid(title=f"Where to measure next: expected narrowing of the {n} headline 95% "
                      f"intervals per {unit}" + (f" (budget {budget:g} {unit})" if budget else ""),
                headers=["#", "addition", "trainings", unit, "narrowing\n(mean)",
                         f"mean\nper {unit}", "narrows most"], rows=[],
                caption=("narrowing: 1 - expected width / width now, averaged over the headline "
                         "quantities (each series' k, each synthetic-per-real multiplier at the "
                         "largest real size, each L(N, D) alpha); "
                         f"{result['draws']} simulated measurements per addition, from the "
                         "current fits plus their residual noise; ✓: the lines below; cost from "
                         + ("the run's calibration.json" if result["calibrated"] else
                            "the planning rates (no calibration.json: launch --pilot)")
                         + f"; {result['backend']} backend"))
    chosen = {id(o) for o in result["chosen"]}
    for i, o in enumerate(result["outcomes"], 1):
        c = o.candidate
        best = max(o.narrowing.items(), key=lambda kv: kv[1], default=None)
        over = budget is not None and c.hours > budget
        grid.rows.append([f"{i}" + (" ✓" if id(o) in chosen else ""), c.label,
                          str(c.meta["trainings"]), f"{c.hours:.3g}" + (" >" if over else ""),
                          f"{o.mean:+.1%}", f"{o.per_hour:+.3g}" if o.per_hour == o.per_hour
                          else MISSING,
                          f"{best[0]} ({best[1]:+.0%})" if best else MISSING])
        if c.meta.get("note"):
            grid.notes.append(f"{c.label}: {c.meta['note']}")
    for r in result["refused"]:
        grid.notes.append(f"{r['label']}: not possible: {r['error']}")
    return grid
