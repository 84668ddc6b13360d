"""Fits and synthetic-vs-real equivalences as rich tables and as markdown.

Each table is first built as a `Grid` of strings; `rich` and markdown only
lay the same cells out, so the terminal and results/summary.md agree to the
digit. Series are labelled by the axes whose values differ between them:
the axes shared by all are said once, in the title.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from synscale.analysis.fit import SOURCE_AXES, Equivalence, SeriesFit, sort_key

EXTRAPOLATED_MARK = "*"
MISSING = "-"
EXTRAPOLATED_CAPTION = (f'"{EXTRAPOLATED_MARK}": extrapolated, the synthetic size lies outside the '
                        f"sizes the synthetic series measured, so it rests on the fitted curve alone; "
                        f'"{MISSING}": no synthetic size reaches that loss (see the notes).')


@dataclass
class Grid:
    title: str                    # what the table shows, with the axes all its rows share
    headers: list[str]            # column names; a header may hold a second line after "\n"
    rows: list[list[str]]         # cells, already formatted
    caption: str = ""             # how to read the marks in the cells
    notes: list[str] = field(default_factory=list)  # one line each: failed fits, unreachable losses


def series_labels(keys: Sequence[Mapping[str, Any]], skip: Sequence[str] = ()) -> list[str]:
    """Short labels: only the axes whose values differ across `keys`."""
    axes = [a for a in dict.fromkeys(a for k in keys for a in k) if a not in skip]
    varying = [a for a in axes if len({_cell(k.get(a)) for k in keys}) > 1]
    shown = varying or axes
    labels = [", ".join(f"{a}={k[a]}" for a in shown if k.get(a) is not None) for k in keys]
    return [lab or "(all)" for lab in labels]


def shared_label(keys: Sequence[Mapping[str, Any]], skip: Sequence[str] = ()) -> str:
    """The axes every key has the same (non-missing) value on."""
    if not keys:
        return ""
    first = keys[0]
    same = [a for a in first if a not in skip and first[a] is not None
            and all(_cell(k.get(a)) == _cell(first[a]) for k in keys)]
    return ", ".join(f"{a}={first[a]}" for a in same)


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def fmt_size(v: float) -> str:
    if not math.isfinite(v):
        return MISSING
    if v >= 1000 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _fmt(v: float, spec: str) -> str:
    return format(v, spec) if math.isfinite(v) else MISSING


def series_grid(series_fits: Sequence[SeriesFit], x_label: str = "images per class",
                y_label: str = "loss") -> Grid:
    """One row per series: law, k, A, E, rmse, then the measured metric per size."""
    sizes = sorted({s for f in series_fits for s in f.x if math.isfinite(s)})
    labels = series_labels([f.key for f in series_fits])
    shared = shared_label([f.key for f in series_fits])
    grid = Grid(title=f"Power-law fits: {y_label} vs {x_label}" + (f" ({shared})" if shared else ""),
                headers=["series", "law", "k", "A", "E", "rmse (log)"] + [fmt_size(s) for s in sizes],
                rows=[],
                caption=f"size columns: measured {y_label} at that many {x_label} (mean over repeats)")
    for f, label in zip(series_fits, labels):
        if f.fit is None:
            params = ["failed", MISSING, MISSING, MISSING, MISSING]
            grid.notes.append(f"{label}: {f.error}")
        else:
            p = f.fit.params
            params = [f.fit.law, _fmt(p["k"], ".3f"), _fmt(p["A"], ".4g"),
                      _fmt(p["E"], ".4g") if f.fit.law != "power" else MISSING,
                      _fmt(f.fit.rmse, ".4f")]
        measured = []
        for s in sizes:
            ys = [y for x, y in zip(f.x, f.y) if x == s and math.isfinite(y)]
            measured.append(f"{sum(ys) / len(ys):.4f}" if ys else "")
        grid.rows.append([label] + params + measured)
    return grid


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


def to_rich(grid: Grid) -> Table:
    table = Table(title=grid.title, caption=grid.caption or None, caption_justify="left")
    # The label column wraps rather than shrinking to nothing in a narrow terminal.
    label_width = min(24, max((len(r[0]) for r in grid.rows), default=8))
    for i, h in enumerate(grid.headers):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i > 0,
                         min_width=label_width if i == 0 else None)
    for row in grid.rows:
        table.add_row(*row)
    return table


def print_grid(console: Console, grid: Grid) -> None:
    console.print(to_rich(grid))
    for note in grid.notes:
        console.print(f"  {note}", style="yellow", markup=False, highlight=False)


def print_series_table(console: Console, series_fits: Sequence[SeriesFit],
                       x_label: str = "images per class", y_label: str = "loss") -> None:
    print_grid(console, series_grid(series_fits, x_label, y_label))


def print_equivalence_tables(console: Console, equivalences: Sequence[Equivalence],
                             x_label: str = "images per class") -> None:
    if not equivalences:
        console.print("no synthetic series matches a fitted real series; nothing to compare")
        return
    for grid in equivalence_grids(equivalences, x_label):
        print_grid(console, grid)


def to_markdown(grid: Grid, level: int = 2) -> str:
    def esc(s: str) -> str:
        return (s.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")
                .replace("\n", "<br>"))

    lines = [f"{'#' * level} {esc(grid.title)}", "",
             "| " + " | ".join(esc(h) for h in grid.headers) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(grid.headers) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in grid.rows]
    if grid.caption:
        lines += ["", esc(grid.caption)]
    if grid.notes:
        lines += [""] + [f"- {esc(n)}" for n in grid.notes]
    return "\n".join(lines) + "\n"


def summary_markdown(series_fits: Sequence[SeriesFit], equivalences: Sequence[Equivalence] = (),
                     title: str = "Scaling-law fits", x_label: str = "images per class",
                     y_label: str = "loss") -> str:
    """results/summary.md: the series table, then one equivalence table per real series."""
    parts = [f"# {title}\n", to_markdown(series_grid(series_fits, x_label, y_label))]
    grids = equivalence_grids(equivalences, x_label)
    if grids:
        parts += [to_markdown(g) for g in grids]
    else:
        parts.append("No synthetic series matches a fitted real series; nothing to compare.\n")
    return "\n".join(parts)
