"""Sample grids as figures: plots/samples.png (one per generator when there
are several) and plots/curation.png.

Each group of a grid is one mosaic (its index rows x the class columns)
drawn with a single imshow, at one figure pixel per thumbnail pixel, so a
grid of 25 configs stays a few MB. What was drawn where (the grid's
layout: classes, indices, groups and which cells hold an image) is written
into the PNG's metadata under "synscale-layout", for tests and tools.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from synscale.report.plots import save_figure, wrapped

THUMB_MAX = 96          # thumbnail side in pixels, at most
PIXEL_BUDGET = 1.2e6    # thumbnail pixels per figure: 3.6 MB raw RGB, less as PNG
GAP = 2                 # pixels between thumbnails
DPI = 100
LABEL_INCHES = 2.2      # the left margin for group labels


def thumbnail(image, side: int) -> np.ndarray:
    """An image as uint8 (side, side, 3): the embedded DDPM's float CHW in
    [-1, 1] (and the real digits) or a pipeline's uint8 HWC, resized (nearest
    when enlarging tiny images, so 8x8 digits stay crisp)."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:  # float CHW in [-1, 1]
        a = np.clip((np.moveaxis(a, 0, -1) + 1.0) * 127.5, 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    im = Image.fromarray(a)
    resample = Image.NEAREST if max(im.size) < side else Image.LANCZOS
    return np.asarray(im.resize((side, side), resample))


def _side(rows: int, columns: int) -> int:
    return int(max(16, min(THUMB_MAX, math.sqrt(PIXEL_BUDGET / max(1, rows * columns)))))


def _mosaic(cells: list[list], side: int) -> np.ndarray:
    """Rows of thumbnails on a white ground; an absent image is a grey square."""
    rows, columns = len(cells), len(cells[0])
    out = np.full((rows * (side + GAP) - GAP, columns * (side + GAP) - GAP, 3), 255, np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            y, x = r * (side + GAP), c * (side + GAP)
            out[y:y + side, x:x + side] = 200 if cell is None else thumbnail(cell, side)
    return out


def plot_samples(grid, path: str | os.PathLike) -> Path:
    """One row group per config (real first): the same classes and indices in each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, columns = len(grid.indices), len(grid.classes)
    side = _side(k * len(grid.groups), columns)
    mosaics = [_mosaic(g.cells, side) for g in grid.groups]
    width_px = mosaics[0].shape[1]
    heights = [m.shape[0] for m in mosaics]
    head, per_group = 1.1, 0.12  # inches: title and class names; space between groups
    fig_w = LABEL_INCHES + width_px / DPI + 0.2
    fig_h = head + sum(h / DPI + per_group for h in heights) + 0.2
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=DPI)
    top = 1 - head / fig_h
    for g, mosaic, h in zip(grid.groups, mosaics, heights):
        ax = fig.add_axes([LABEL_INCHES / fig_w, top - h / DPI / fig_h,
                           width_px / DPI / fig_w, h / DPI / fig_h])
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([(r + 0.5) * (side + GAP) for r in range(k)], [f"#{i}" for i in grid.indices],
                      fontsize=6)
        note = f"\n({g.missing})" if g.missing else ""
        ax.set_ylabel(wrapped(g.label, LABEL_INCHES - 0.5, 8) + note, rotation=0, ha="right",
                      va="center", fontsize=8)
        if g is grid.groups[0]:
            ax.set_xticks([(c + 0.5) * (side + GAP) for c in range(columns)], grid.classes,
                          rotation=45, ha="left", fontsize=7)
            ax.xaxis.tick_top()
        top -= h / DPI / fig_h + per_group / fig_h
    fig.suptitle(wrapped(f"Samples: {grid.title}. Image #i of a class has the same seed in "
                         "every group; real images first", fig_w - 0.4, 10), fontsize=10,
                 y=1 - 0.08 / fig_h, va="top")
    return _save_with_layout(fig, Path(path), grid.layout())


def plot_curation(groups, safety, path: str | os.PathLike) -> Path:
    """Per curated pack and score: its lowest- and highest-scoring images, each
    with its score, class and index; then the safety checker's counts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max([len(g.lowest) for g in groups] or [0])
    side = _side(len(groups), 2 * n + 1)
    lines = len(safety)
    fig_w = LABEL_INCHES + (2 * n + 1) * (side + GAP) / DPI + 0.3
    row_in = side / DPI + 1.45  # the image, its rotated label below, the title above
    fig_h = 0.9 + len(groups) * row_in + 0.25 * lines + 0.2
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=DPI)
    top = 1 - 0.9 / fig_h
    layout = {"groups": [], "safety": []}
    for g in groups:
        cells = [[im for _, im, _, _ in g.lowest] + [None] * (n - len(g.lowest)) + [None]
                 + [im for _, im, _, _ in g.highest] + [None] * (n - len(g.highest))]
        mosaic = _mosaic(cells, side)
        mosaic[:, n * (side + GAP):(n + 1) * (side + GAP) - GAP] = 255  # the gap column
        h = mosaic.shape[0]
        ax = fig.add_axes([LABEL_INCHES / fig_w, top - h / DPI / fig_h,
                           mosaic.shape[1] / DPI / fig_w, h / DPI / fig_h])
        ax.imshow(mosaic, interpolation="nearest")
        shown = [*g.lowest, *([None] * (n - len(g.lowest))), None, *g.highest]
        ticks = [(c + 0.5) * (side + GAP) for c, s in enumerate(shown) if s is not None]
        # six digits: a classifier's confidence sits at 0.99999... for most images
        ax.set_xticks(ticks, [f"{s[0]:.6g}  {s[2][:14]} #{s[3]}" for s in shown if s is not None],
                      rotation=90, fontsize=6)
        ax.set_yticks([])
        ax.set_ylabel(wrapped(g.label, LABEL_INCHES - 0.4, 8) + "\n" + "\n".join(g.filters),
                      rotation=0, ha="right", va="center", fontsize=7)
        for half, what in ((0, "lowest"), (n + 1, "highest")):
            ax.text((half + n / 2) * (side + GAP), -4, f"{what} {g.score}", ha="center",
                    va="bottom", fontsize=7)
        layout["groups"].append({"label": g.label, "score": g.score, "filters": g.filters,
                                 "lowest": [[s, c, i] for s, _, c, i in g.lowest],
                                 "highest": [[s, c, i] for s, _, c, i in g.highest]})
        top -= row_in / fig_h
    for s in safety:
        share = s.flagged / s.rows if s.rows else 0.0
        fig.text(0.02, top - 0.2 / fig_h, f"{s.label}: the safety checker flagged {s.flagged:,} "
                 f"of {s.rows:,} images ({share:.1%}); 'unflagged' trains without them",
                 fontsize=8, va="top")
        layout["safety"].append({"label": s.label, "flagged": s.flagged, "rows": s.rows})
        top -= 0.25 / fig_h
    fig.suptitle(wrapped("Curation: the images each quality score ranks lowest and highest "
                         "(its value under each)", fig_w - 0.4, 10), fontsize=10,
                 y=1 - 0.08 / fig_h, va="top")
    return _save_with_layout(fig, Path(path), layout)


def _save_with_layout(fig, path: Path, layout: dict) -> Path:
    import matplotlib.pyplot as plt
    try:  # at one figure pixel per thumbnail pixel
        return save_figure(fig, path, dpi=DPI, metadata={"synscale-layout": json.dumps(layout)})
    finally:
        plt.close(fig)


def read_layout(path: str | os.PathLike) -> dict:
    """The layout a figure of this module was drawn from."""
    from PIL import Image
    with Image.open(path) as im:
        return json.loads(im.text["synscale-layout"])
