"""Fits and synthetic-vs-real equivalences as rich tables and as markdown.

Each table is first built as a `Grid` of strings; `rich` and markdown only
lay the same cells out, so the terminal and results/summary.md agree to the
digit. Series are labelled by the axes whose values differ between them:
the axes shared by all are said once, in the title.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from synscale.analysis.fit import SOURCE_AXES, Equivalence, SeriesFit, sort_key
from synscale.report.grid import (
    MISSING,
    Grid,
    fmt_size,
    print_grid,
    series_labels,
    shared_label,
    to_markdown,
)

EXTRAPOLATED_MARK = "*"
EXTRAPOLATED_CAPTION = (f'"{EXTRAPOLATED_MARK}": extrapolated, the synthetic size lies outside the '
                        f"sizes the synthetic series measured, so it rests on the fitted curve alone; "
                        f'"{MISSING}": no synthetic size reaches that loss (see the notes).')


def _fmt(v: float, spec: str) -> str:
    return format(v, spec) if math.isfinite(v) else MISSING


def _fmt_param(name: str, v: float) -> str:
    if name == "E" and math.isfinite(v) and abs(v) < 5e-5:
        return "0"  # a floor the optimizer drove to its bound, printed as what it is
    return _fmt(v, ".3f" if name == "k" else ".4g")


def _with_interval(lf, name: str) -> str:
    """A parameter, with its bootstrap 95% interval when there is one."""
    v = _fmt_param(name, lf.fit.params[name])
    if lf.interval is None or name not in lf.interval.ci95:
        return v
    lo, hi = lf.interval.ci95[name]
    return f"{v} ({_fmt_param(name, lo)}-{_fmt_param(name, hi)})"


def series_grid(series_fits: Sequence[SeriesFit], x_label: str = "images per class",
                y_label: str = "loss") -> Grid:
    """A row per series and law (the lead law first): k, the floor E and the
    knee D0 where the law has them, each with its interval, and the rmse."""
    labels = series_labels([f.key for f in series_fits])
    shared = shared_label([f.key for f in series_fits])
    lead = series_fits[0].lead if series_fits else ""
    laws = sorted(series_fits[0].laws, key=lambda law: law != lead) if series_fits else []
    with_ci = any(lf.interval is not None for f in series_fits for lf in f.laws.values())
    grid = Grid(title=f"Scaling fits: {y_label} vs {x_label}" + (f" ({shared})" if shared else ""),
                headers=["series", "law", "k", "E", "D0", "rmse (log)"], rows=[],
                caption=(f"comparisons read the {lead} law (first); " if len(laws) > 1 else "")
                + ("(lo-hi): bootstrap 95% interval; " if with_ci else "")
                + "A and every residual: results/fits.json")
    for f, label in zip(series_fits, labels):
        for i, law in enumerate(laws):
            lf = f.laws[law]
            cells = [label if i == 0 else "", law]
            if lf.fit is None:
                grid.rows.append(cells + ["failed", MISSING, MISSING, MISSING])
                grid.notes.append(f"{label} ({law}): {lf.error}")
                continue
            cells += [_with_interval(lf, n) if n in lf.fit.params and (n != "E" or law != "power")
                      else "" for n in ("k", "E", "D0")]
            grid.rows.append(cells + [_fmt(lf.fit.rmse, ".4f")])
    return grid


def measured_grid(series_fits: Sequence[SeriesFit], x_label: str = "images per class",
                  y_label: str = "loss") -> Grid:
    """The points behind the fits: the metric per series and size."""
    sizes = sorted({s for f in series_fits for s in f.x if math.isfinite(s)})
    labels = series_labels([f.key for f in series_fits])
    shared = shared_label([f.key for f in series_fits])
    grid = Grid(title=f"Measured {y_label} per {x_label}" + (f" ({shared})" if shared else ""),
                headers=["series"] + [fmt_size(s) for s in sizes], rows=[],
                caption="mean over repeats of a size")
    for f, label in zip(series_fits, labels):
        cells = [label]
        for s in sizes:
            ys = [y for x, y in zip(f.x, f.y) if x == s and math.isfinite(y)]
            cells.append(f"{sum(ys) / len(ys):.4f}" if ys else "")
        grid.rows.append(cells)
    return grid


def points_table(fits: Sequence[Mapping[str, Any]], source: str) -> Table:
    """tools/fit_curves.py on a CSV: one row per group, each parameter with
    its standard error and 95% interval when bootstrapped."""
    names = next((list(f["params"]) for f in fits if "params" in f), [])
    table = Table(title=f"fits of {source}")
    for col in ("group", "law", "points", *names, "rmse (log)"):
        table.add_column(col, justify="left" if col in ("group", "law") else "right")
    for f in fits:
        group = ", ".join(f"{k}={v}" for k, v in f["group"].items()) or "(all)"
        if "params" not in f:
            table.add_row(group, f["law"], str(f["n_points"]), f"[red]{f['error']}[/]")
            continue
        cells = []
        for name in names:
            cell = f"{f['params'][name]:.4g}"
            if "se" in f:
                lo, hi = f["ci95"][name]
                cell += f" ± {f['se'][name]:.2g}\n[{lo:.4g}, {hi:.4g}]"
            cells.append(cell)
        table.add_row(group, f["law"], str(f["n_points"]), *cells, f"{f['rmse']:.4f}")
    return table


def equivalence_grids(equivalences: Sequence[Equivalence],
                      x_label: str = "images per class") -> list[Grid]:
    """One grid per real series: rows are synthetic series, columns real sizes.

    A cell is the synthetic size that reaches the real curve's loss at that
    real size, and the multiplier synthetic/real.
    """
    by_real: dict[tuple, list[Equivalence]] = {}
    for e in equivalences:
        by_real.setdefault(tuple(e.real.items()), []).append(e)
    grids = []
    for real_items in sorted(by_real, key=lambda t: sort_key(dict(t))):
        eqs = by_real[real_items]
        real = dict(real_items)
        sizes = sorted({e.real_size for e in eqs})
        target = {e.real_size: e.target_loss for e in eqs}
        syn_keys = list({tuple(e.synthetic.items()): e.synthetic for e in eqs}.values())
        syn_keys.sort(key=sort_key)
        model_axes = [a for a in real if a not in SOURCE_AXES]
        labels = series_labels(syn_keys, skip=model_axes)
        context = shared_label([real], skip=SOURCE_AXES)
        grid = Grid(title=f"Synthetic {x_label} for the loss of real data"
                          + (f" ({context})" if context else ""),
                    headers=["synthetic series"]
                            + [f"real {fmt_size(s)}\nloss {target[s]:.4f}" for s in sizes],
                    rows=[],
                    caption=f"cells: synthetic {x_label} needed (multiplier synthetic/real). "
                            + EXTRAPOLATED_CAPTION)
        for key, label in zip(syn_keys, labels):
            cells = {e.real_size: e for e in eqs if e.synthetic == key}
            row = [label]
            for s in sizes:
                e = cells.get(s)
                if e is None:
                    row.append("")
                elif math.isnan(e.synthetic_size):
                    row.append(MISSING)
                    grid.notes.append(f"{label} at real {fmt_size(s)}: {e.note}")
                else:
                    mark = EXTRAPOLATED_MARK if e.extrapolated else ""
                    row.append(f"{fmt_size(e.synthetic_size)} ({e.multiplier:.2f}x){mark}")
            grid.rows.append(row)
        grids.append(grid)
    return grids


def print_series_table(console: Console, series_fits: Sequence[SeriesFit],
                       x_label: str = "images per class", y_label: str = "loss",
                       holdout: Sequence[Mapping[str, Any]] = ()) -> None:
    from synscale.report.extra_grids import holdout_grid
    print_grid(console, series_grid(series_fits, x_label, y_label))
    print_grid(console, measured_grid(series_fits, x_label, y_label))
    if (grid := holdout_grid(holdout)) is not None:
        print_grid(console, grid)


def print_equivalence_tables(console: Console, equivalences: Sequence[Equivalence],
                             x_label: str = "images per class") -> None:
    if not equivalences:
        console.print("no synthetic series matches a fitted real series; nothing to compare")
        return
    for grid in equivalence_grids(equivalences, x_label):
        print_grid(console, grid)


def summary_markdown(series_fits: Sequence[SeriesFit], equivalences: Sequence[Equivalence] = (),
                     per_class: Sequence[Mapping[str, Any]] = (),
                     model_size: Sequence[Mapping[str, Any]] = (), criteria=None,
                     curation: Sequence[Mapping[str, Any]] = (),
                     holdout: Sequence[Mapping[str, Any]] = (), title: str = "Scaling-law fits",
                     x_label: str = "images per class",
                     y_label: str = "loss") -> str:
    """results/summary.md: the series table, one equivalence table per real
    series, then L(N, D) fits and per-class verdicts where there are some."""
    from synscale.report.extra_grids import (
        curation_grid,
        holdout_grid,
        model_size_grids,
        per_class_grid,
    )

    parts = [f"# {title}\n", to_markdown(series_grid(series_fits, x_label, y_label)),
             to_markdown(measured_grid(series_fits, x_label, y_label))]
    if (grid := holdout_grid(holdout)) is not None:
        parts.append(to_markdown(grid))
    grids = equivalence_grids(equivalences, x_label)
    if grids:
        parts += [to_markdown(g) for g in grids]
    else:
        parts.append("No synthetic series matches a fitted real series; nothing to compare.\n")
    parts += [to_markdown(g) for g in model_size_grids(model_size)]
    if per_class:
        parts.append(to_markdown(per_class_grid(per_class, criteria.describe() if criteria else "")))
    if (grid := curation_grid(curation)) is not None:
        parts.append(to_markdown(grid))
    return "\n".join(parts)


def print_model_size_tables(console: Console, model_size: Sequence[Mapping[str, Any]]) -> None:
    from synscale.report.extra_grids import model_size_grids
    for grid in model_size_grids(model_size):
        print_grid(console, grid)


def print_per_class_table(console: Console, per_class: Sequence[Mapping[str, Any]],
                          criteria) -> None:
    from synscale.report.extra_grids import per_class_grid
    if per_class:
        print_grid(console, per_class_grid(per_class, criteria.describe()))


def print_curation_table(console: Console, curation: Sequence[Mapping[str, Any]]) -> None:
    from synscale.report.extra_grids import curation_grid
    if (grid := curation_grid(curation)) is not None:
        print_grid(console, grid)
