"""Scaling curves as one PNG: measured points and fitted laws on log-log axes,
with bootstrap bands; and the per-class verdicts as a second one.

One panel per model and eval set (every axis that is not a source axis), so
curves that are compared share axes. Each synthetic source keeps its colour
across panels; real data is black and dashed. The figure is drawn with the
Agg canvas directly (no pyplot, no global backend switch) and written to a
temporary name first, so a killed process never leaves half a PNG.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synscale.analysis.fit import SOURCE_AXES, SeriesFit, sort_key
from synscale.plan import state
from synscale.report.grid import series_labels, shared_label

PANEL_WIDTH, PANEL_HEIGHT = 5.0, 3.8  # inches per panel
MAX_COLUMNS = 3
TITLE_SIZE, SUPTITLE_SIZE = 9, 12  # points


def wrapped(text: str, inches: float, points: float) -> str:
    """`text` broken at its ", " and spaces into lines that fit `inches` at
    `points` (an average glyph is ~0.6 em wide): long series labels stay
    within their panel instead of running into the next one's title."""
    import textwrap
    return textwrap.fill(text, width=max(16, int(inches * 72 / (points * 0.6))),
                         break_on_hyphens=False)


def plot_scaling(series_fits: Sequence[SeriesFit], path: str | os.PathLike,
                 x_label: str = "images per class", y_label: str = "loss",
                 real: str = "real", source_axes: Sequence[str] = SOURCE_AXES) -> Path:
    """Write the scaling plot of `series_fits` to `path` (PNG); returns the path."""
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not series_fits:
        raise ValueError("plot_scaling got no series; nothing to plot")
    path = Path(path)
    panels: dict[tuple, list[SeriesFit]] = {}
    for f in series_fits:
        panels.setdefault(tuple((a, v) for a, v in f.key.items() if a not in source_axes), []).append(f)
    order = sorted(panels, key=lambda t: sort_key(dict(t)))

    sources = sorted({_source(f, source_axes) for f in series_fits if f.source != real},
                     key=lambda t: sort_key(dict(t)))
    palette = [f"C{i}" for i in range(10)]
    colour = {s: palette[i % len(palette)] for i, s in enumerate(sources)}

    ncols = min(MAX_COLUMNS, len(order))
    nrows = math.ceil(len(order) / ncols)
    fig = Figure(figsize=(PANEL_WIDTH * ncols, PANEL_HEIGHT * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    panel_titles = series_labels([dict(p) for p in order]) if len(order) > 1 else [""]
    common = shared_label([f.key for f in series_fits], skip=source_axes)
    for ax, panel, ptitle in zip(axes, order, panel_titles):
        fits = panels[panel]
        labels = _legend_labels(fits, real, source_axes)
        for f, label in zip(fits, labels):
            _draw(ax, f, label, "black" if f.source == real else colour[_source(f, source_axes)],
                  is_real=f.source == real)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # 0.6 and 40 read faster than 6x10^-1 and 4x10^1
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.FuncFormatter(_minor_labeller(axis)))
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(wrapped(ptitle, PANEL_WIDTH, TITLE_SIZE), fontsize=TITLE_SIZE)
        ax.grid(True, which="both", alpha=0.3)
        # Curves fall from upper left to lower right: the lower left stays clear.
        ax.legend(fontsize=7, loc="lower left")
    for ax in axes[len(order):]:
        ax.set_visible(False)
    fig.suptitle(wrapped(f"{y_label} vs {x_label}" + (f" ({common})" if common else "")
                         + ("; bands: bootstrap 95%" if any(f.interval for f in series_fits)
                            else ""), PANEL_WIDTH * ncols, SUPTITLE_SIZE), fontsize=SUPTITLE_SIZE)
    return save_figure(fig, path)


def save_figure(fig, path: Path, dpi: int = 120, metadata: dict | None = None) -> Path:
    """Write to a temporary name, then rename: never half a PNG, and readable by
    whoever may read the run's other results (the umask's mode, as every result
    file: a mkstemp file would be the owner's alone). `metadata`: PNG text entries."""
    with state.atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata=metadata)
    return Path(path)


def _minor_labeller(axis):
    """Labels for minor log ticks: all of them within half a decade, 2 and 5
    within one and a half, none beyond (the decade labels suffice there)."""
    def label(v: float, _pos) -> str:
        lo, hi = axis.get_view_interval()
        if v <= 0 or lo <= 0:
            return ""
        decades = math.log10(hi / lo)
        coeff = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        keep = coeff in range(2, 10) if decades < 0.5 else coeff in (2, 5) if decades < 1.5 else False
        return f"{v:g}" if keep else ""
    return label


def _legend_labels(fits: Sequence[SeriesFit], real: str, source_axes: Sequence[str]) -> list[str]:
    """'real', and 'synthetic' plus only the source axes that tell synthetic
    series apart: the panel title already names everything else."""
    synthetic = [f for f in fits if f.source != real]
    keys = [{a: f.key.get(a) for a in source_axes if a != "source"} for f in synthetic]
    varying = {a for a in (keys[0] if keys else {}) if len({str(k[a]) for k in keys}) > 1}
    short = iter(", ".join(f"{a}={k[a]}" for a in k if a in varying and k[a] is not None)
                 for k in keys)
    return [real if f.source == real else " ".join(filter(None, (f.source, next(short))))
            for f in fits]


def _source(f: SeriesFit, source_axes: Sequence[str]) -> tuple:
    return tuple((a, f.key.get(a)) for a in source_axes)


def _draw(ax, f: SeriesFit, label: str, colour: str, is_real: bool) -> None:
    x = np.asarray(f.x, dtype=float)
    y = np.asarray(f.y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)  # a log axis cannot show the rest
    marker = "s" if is_real else "o"
    if f.fit is None:
        ax.scatter(x[ok], y[ok], color=colour, marker=marker, s=18, label=f"{label} (no fit)")
        return
    grid = np.geomspace(f.fit.x_min, f.fit.x_max, 100)
    ax.plot(grid, f.fit.predict(grid), color=colour, linestyle="--" if is_real else "-",
            linewidth=1.8 if is_real else 1.2, label=f"{label} (k={f.fit.params['k']:.3f})")
    if f.interval is not None and f.interval.draws:
        curves = np.array([d["E"] + d["A"] * grid ** -d["k"] for d in f.interval.draws])
        lo, hi = np.nanpercentile(curves, [2.5, 97.5], axis=0)
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.15, linewidth=0)
    ax.scatter(x[ok], y[ok], color=colour, marker=marker, s=18)


CATEGORY_COLOURS = {"easy": "C2", "scaling": "C0", "poor": "C3"}


def plot_per_class(per_class, criteria, path: str | os.PathLike) -> Path:
    """One panel per series: each class at (top-1 at the smallest size,
    per-class exponent k), coloured by its category, with the thresholds."""
    return save_figure(per_class_figure(per_class, criteria), Path(path))


def per_class_figure(per_class, criteria):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [p["key"] for p in per_class]
    titles = series_labels(keys)
    ncols = min(MAX_COLUMNS, len(per_class))
    nrows = math.ceil(len(per_class) / ncols)
    fig = Figure(figsize=(PANEL_WIDTH * ncols, PANEL_HEIGHT * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, p, title in zip(axes, per_class, titles):
        for category, colour in CATEGORY_COLOURS.items():
            pts = [(c["top1_at_smallest"], c["k"]) for c in p["per_class"]
                   if c["category"] == category and c["k"] is not None
                   and c["top1_at_smallest"] is not None]
            if pts:
                ax.scatter(*zip(*pts), s=14, color=colour,
                           label=f"{category} ({p['counts'][category]})")
        ax.axvline(criteria.easy_top1, color="grey", linestyle=":", linewidth=1)
        ax.axhline(criteria.scaling_k, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("top-1 at the smallest size")
        ax.set_ylabel("per-class k (loss vs size)")
        ax.set_title(wrapped(title, PANEL_WIDTH, TITLE_SIZE), fontsize=TITLE_SIZE)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no per-class fits", ha="center", transform=ax.transAxes)
    for ax in axes[len(per_class):]:
        ax.set_visible(False)
    shared = shared_label(keys)
    fig.suptitle(wrapped("classes by how they scale" + (f" ({shared})" if shared else ""),
                         PANEL_WIDTH * ncols, SUPTITLE_SIZE), fontsize=SUPTITLE_SIZE)
    return fig
