"""The shared piece of every results table: a `Grid` of formatted cells,
laid out by rich in the terminal and as markdown in summary.md (so the two
agree to the digit), and the labels that name series by the axes that tell
them apart. tables.py and extra_grids.py both build on it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

MISSING = "-"


@dataclass
class Grid:
    title: str                    # what the table shows, with the axes all its rows share
    headers: list[str]            # column names; a header may hold a second line after "\n"
    rows: list[list[str]]         # cells, already formatted
    caption: str = ""             # how to read the marks in the cells
    notes: list[str] = field(default_factory=list)  # one line each: failed fits, unreachable losses


def _split(keys: Sequence[Mapping[str, Any]], skip: Sequence[str]) -> tuple[list, list]:
    """(axes shared by the keys, axes that tell them apart). An axis some
    keys lack because of their source (a real series has no generator or
    guidance) is shared when the keys that have it agree, so
    "generator=embedded-ddpm" goes to the title once instead of on every
    synthetic row. One whose absence means something (no curation rule, no
    synthetic share) among keys of the same source still tells them apart,
    and so does any axis when the rows would otherwise read alike."""
    # in the order the keys list them, the keys taken in a fixed order: a title
    # reads the same whichever series finished first
    ordered = sorted(keys, key=lambda k: json.dumps(k, sort_keys=True, default=str))
    axes = [a for a in dict.fromkeys(a for k in ordered for a in k) if a not in skip]
    present = {a: {_cell(k[a]) for k in keys if k.get(a) is not None} for a in axes}

    def by_source(a: str) -> bool:
        """Keys lacking `a` are of other sources than those having it."""
        having = {_cell(k.get("source")) for k in keys if k.get(a) is not None}
        lacking = {_cell(k.get("source")) for k in keys if k.get(a) is None}
        return "source" not in skip and all("source" in k for k in keys) and \
            not having & lacking
    varying = [a for a in axes if len(present[a]) > 1 or
               (len(present[a]) == 1 and not by_source(a) and
                any(k.get(a) is None for k in keys))]

    def rows(shown):
        return len({tuple(_cell(k.get(a)) for a in shown) for k in keys})
    if rows(varying) < rows(axes):
        varying = [a for a in axes if len({_cell(k.get(a)) for k in keys}) > 1]
    return [a for a in axes if a not in varying and len(present[a]) == 1], varying


def series_labels(keys: Sequence[Mapping[str, Any]], skip: Sequence[str] = ()) -> list[str]:
    """Short labels: only the axes whose values differ across `keys` (all of
    them for a single key)."""
    shared, varying = _split(keys, skip)
    shown = varying or [a for a in dict.fromkeys(a for k in keys for a in k) if a not in skip]
    labels = [", ".join(f"{a}={k[a]}" for a in shown if k.get(a) is not None) for k in keys]
    return [lab or "(all)" for lab in labels]


def shared_label(keys: Sequence[Mapping[str, Any]], skip: Sequence[str] = ()) -> str:
    """The axes the keys agree on (where they have them): a table's title."""
    if not keys:
        return ""
    shared, _ = _split(keys, skip)
    return ", ".join(f"{a}={next(k[a] for k in keys if k.get(a) is not None)}" for a in shared)


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def fmt_size(v: float) -> str:
    if not math.isfinite(v):
        return MISSING
    if v >= 1000 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"


def to_rich(grid: Grid) -> Table:
    from rich.markup import escape  # cells are plain text: "[...]" is not a style tag here

    grid = Grid(escape(grid.title), [escape(h) for h in grid.headers],
                [[escape(c) for c in row] for row in grid.rows], escape(grid.caption), grid.notes)
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
