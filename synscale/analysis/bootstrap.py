"""Bootstrap intervals for fitted parameters: resample the points with
replacement (seeded), refit each resample, and read the spread.

A resample the law cannot be fitted to (too few distinct sizes drawn) is
counted, not retried: the count says how much the interval rests on.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synscale.analysis.errors import FitError


@dataclass(frozen=True)
class Interval:
    se: dict[str, float]                      # standard deviation over the refits
    ci95: dict[str, tuple[float, float]]      # 2.5th and 97.5th percentiles
    resamples: int                            # refits that succeeded
    failed: int                               # resamples that could not be fitted
    seed: int
    draws: tuple = field(default=(), repr=False)  # every refit's parameters (for plot bands)

    def to_dict(self) -> dict[str, Any]:
        return {"se": dict(self.se), "ci95": {k: list(v) for k, v in self.ci95.items()},
                "resamples": self.resamples, "failed": self.failed, "seed": self.seed}


def bootstrap(refit: Callable[[np.ndarray], dict[str, float]], n_points: int, count: int,
              seed: int = 0, progress: Callable[[], None] | None = None) -> Interval | None:
    """`refit(indices)` fits the points at `indices` and returns the
    parameters; None when fewer than two resamples could be fitted."""
    rng = np.random.default_rng(seed)
    draws, failed = [], 0
    for _ in range(count):
        idx = rng.integers(0, n_points, n_points)
        try:
            draws.append(refit(idx))
        except FitError:
            failed += 1
        if progress is not None:
            progress()
    if len(draws) < 2:
        return None
    names = list(draws[0])
    values = {k: np.array([d[k] for d in draws], dtype=float) for k in names}
    return Interval({k: float(np.std(v, ddof=1)) for k, v in values.items()},
                    {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
                     for k, v in values.items()}, len(draws), failed, seed, tuple(draws))


@contextmanager
def progress_bar(console, total: int) -> Iterator[Callable[[], None] | None]:
    """A transient rich bar over `total` refits, advanced by the callable it
    yields; None (no bar) without a console or without refits."""
    if console is None or not total:
        yield None
        return
    from rich.progress import Progress
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("bootstrap", total=total)
        yield lambda: bar.advance(task)
