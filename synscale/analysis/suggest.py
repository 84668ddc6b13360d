"""Where to measure next: how much each candidate addition to a study is
expected to narrow the 95% intervals of its headline quantities.

The headline quantities are each series' exponent k (of the lead law), the
synthetic-per-real multiplier at the largest real size of every pair the
summary compares, and, where the study fits L(N, D) across model sizes, that
law's model exponent alpha. Each is read off bootstrap draws of the fits it
rests on (a multiplier pairs the i-th draw of its real series with the i-th
of its synthetic one), its interval width being the spread between the
2.5th and 97.5th percentiles (in log for a multiplier, a ratio).

A candidate adds points to some fits ("units"): a new size, a repeat at a
size, a model width. Its expected effect comes from simulation, as the
literature on optimal design does it when the model is nonlinear: draw the
new points from the current fit plus the residual noise (log space, the
fit's own residual variance with its degrees of freedom), refit the
bootstrap with them, read the widths, and average over draws. Every
candidate sees the same noise draws and the same resampling seed (common
random numbers), so the differences between candidates are not noise of
the simulation.

This module knows fits and points only; what a candidate is in a study file
and what it costs is plan/additions.py's.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synscale.analysis.fit import FitError, refit
from synscale.analysis.holdout import PARAMETERS

DRAWS = 16       # simulated measurements per candidate
RESAMPLES = 200  # bootstrap refits per simulated data set (a series': batched, batch_fit.py)
# L(N, D): 5 parameters by L-BFGS, ~100x a series' refit even batched
GROUP_RESAMPLES, GROUP_DRAWS = 100, 8


@dataclass
class Unit:
    """One fit the candidates can add points to: a series (coordinates: the
    size) or a model-size group (coordinates: parameters N and images D)."""
    key: tuple                                  # ("series", ...) or ("group", ...)
    coords: np.ndarray                          # (points, dims)
    y: np.ndarray                               # measured loss per point
    predict: Callable[[np.ndarray], np.ndarray]  # loss of the current fit at coords
    refit: Callable[[np.ndarray, np.ndarray], dict[str, float]]  # params of a fit of points
    parameters: int                             # the law's fitted parameters
    resamples: int = RESAMPLES
    batched: Callable | None = None             # (coords, ys, resample indices) -> draws per y
    draws_cap: int | None = None                # simulated data sets at most (then reused)
    noise: float = field(init=False)

    def __post_init__(self):
        res = np.log(self.y) - np.log(self.predict(self.coords))
        dof = max(1, self.y.size - self.parameters)
        self.noise = float(math.sqrt(np.sum(res ** 2) / dof))


def series_unit(key: tuple, x, y, law: str, start: dict[str, float]) -> Unit:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    p = start

    def predict(c):
        return p["E"] + p["A"] * (c[:, 0] + p.get("D0", 0.0)) ** -p["k"]
    from synscale.analysis import batch_fit
    if law == "power":
        batched = lambda c, ys, idx: batch_fit.power(c[:, 0], ys, idx)  # noqa: E731
    else:
        batched = lambda c, ys, idx: batch_fit.offset(c[:, 0], ys, idx, start, law)  # noqa: E731
    return Unit(key, x[:, None], y, predict,
                lambda c, v: refit(law, c[:, 0], v, start).params, PARAMETERS[law],
                batched=batched)


def group_unit(key: tuple, n, d, y, fit, resamples: int = GROUP_RESAMPLES) -> Unit:
    """A model-size group's L(N, D) (chinchilla.ChinchillaFit), refitted in
    batches (batch_fit.chinchilla: ~50 ms one at a time)."""
    from synscale.analysis import batch_fit
    from synscale.analysis.chinchilla import fit_chinchilla, log_params
    start = log_params(fit)
    coords = np.stack([np.asarray(n, dtype=float), np.asarray(d, dtype=float)], axis=1)
    return Unit(key, coords, np.asarray(y, dtype=float),
                lambda c: fit.predict(c[:, 0], c[:, 1]),
                lambda c, v: fit_chinchilla(c[:, 0], c[:, 1], v, x0=start).params, 5,
                resamples=resamples, draws_cap=GROUP_DRAWS,
                batched=lambda c, ys, idx: batch_fit.chinchilla(c[:, 0], c[:, 1], ys, idx, start))


def draws(unit: Unit, coords: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap draws of the unit's parameters fitted to these points."""
    return draws_many(unit, coords, y[None, :], seed)[0]


def draws_many(unit: Unit, coords: np.ndarray, ys: np.ndarray,
               seed: int) -> list[dict[str, np.ndarray]]:
    """The same for several measurements `ys` (data sets, rows) of the same
    points, with the same resamples: a batched unit refits them all at once.
    Each unit resamples with its own stream: a multiplier pairs the draws of
    two series, which must be independent."""
    rng = np.random.default_rng([seed, _unit_id(unit.key)])
    idx = rng.integers(0, ys.shape[1], (unit.resamples, ys.shape[1]))
    if unit.batched is not None:
        return unit.batched(coords, ys, idx)
    out = []
    for y in ys:
        found: dict[str, list] = {}
        for i in idx:
            try:
                params = unit.refit(coords[i], y[i])
            except FitError:
                continue
            for name, v in params.items():
                found.setdefault(name, []).append(v)
        out.append({name: np.asarray(v, dtype=float) for name, v in found.items()})
    return out


@dataclass(frozen=True)
class Quantity:
    """A headline quantity: its name in the table, the units it reads, and
    its interval width from their draws."""
    label: str
    units: tuple
    width: Callable[..., float]


def exponent(label: str, unit: tuple, name: str = "k") -> Quantity:
    def width(d):
        v = d.get(name, np.array([]))
        return float(np.percentile(v, 97.5) - np.percentile(v, 2.5)) if v.size >= 2 else math.nan
    return Quantity(label, (unit,), width)


def multiplier(label: str, real: tuple, synthetic: tuple, size: float) -> Quantity:
    """Synthetic images per class matching the real fit at `size`, over it:
    width in log (a ratio); NaN when most paired draws never reach the target."""
    def width(r, s):
        m = min(r["k"].size, s["k"].size) if "k" in r and "k" in s else 0
        if m < 2:
            return math.nan
        r = {k: v[:m] for k, v in r.items()}
        s = {k: v[:m] for k, v in s.items()}
        with np.errstate(all="ignore"):
            target = r["E"] + r["A"] * (size + r.get("D0", 0.0)) ** -r["k"]
            reach = (s["A"] / (target - s["E"])) ** (1 / s["k"]) - s.get("D0", 0.0)
            ratio = np.log(reach / size)
        ratio = ratio[np.isfinite(ratio)]
        if ratio.size < max(2, m // 2):
            return math.nan
        return float(np.percentile(ratio, 97.5) - np.percentile(ratio, 2.5))
    return Quantity(label, (real, synthetic), width)


@dataclass
class Candidate:
    label: str                                   # what it adds, for the table
    adds: dict[tuple, list] = field(default_factory=dict)  # unit key -> coordinates added
    hours: float = math.nan                      # device-hours it costs
    meta: dict[str, Any] = field(default_factory=dict)     # the caller's (study edit, stages)


@dataclass(frozen=True)
class Outcome:
    candidate: Candidate
    narrowing: dict[str, float]   # quantity label -> 1 - expected width / width now
    mean: float                   # over every headline quantity (0 for those it misses)

    @property
    def per_hour(self) -> float:
        return self.mean / self.candidate.hours if self.candidate.hours > 0 else math.nan


def base_draws(units: dict[tuple, Unit], seed: int = 0) -> dict[tuple, dict]:
    """Each unit's bootstrap draws from its measured points."""
    return {k: draws(u, u.coords, u.y, seed) for k, u in units.items()}


def widths_now(units: dict[tuple, Unit], quantities: Sequence[Quantity],
               seed: int = 0, base: dict[tuple, dict] | None = None) -> dict[str, float]:
    d = base if base is not None else base_draws(units, seed)
    return {q.label: q.width(*(d[k] for k in q.units)) for q in quantities}


def expected_widths(units: dict[tuple, Unit], quantities: Sequence[Quantity],
                    candidate: Candidate, n_draws: int = DRAWS, seed: int = 0,
                    base: dict[tuple, dict] | None = None) -> dict[str, float]:
    """Mean width of each quantity the candidate touches, over `n_draws`
    simulated measurements of its points (the others keep `base` draws)."""
    touched = [q for q in quantities if set(q.units) & set(candidate.adds)]
    base = base if base is not None else base_draws(units, seed)
    sums = {q.label: [] for q in touched}
    simulated: dict[tuple, list] = {}  # unit -> draws per simulated data set
    for key, added in candidate.adds.items():
        unit = units[key]
        new = np.asarray(added, dtype=float).reshape(-1, unit.coords.shape[1])
        slots = min(n_draws, unit.draws_cap or n_draws)
        ys = np.stack([np.concatenate([unit.y, unit.predict(new) * np.exp(
            unit.noise * _noise(seed, slot, key, new))]) for slot in range(slots)])
        simulated[key] = draws_many(unit, np.concatenate([unit.coords, new]), ys, seed)
    for r in range(n_draws):
        d = dict(base)
        for key, sets in simulated.items():
            d[key] = sets[r % len(sets)]
        for q in touched:
            sums[q.label].append(q.width(*(d[k] for k in q.units)))
    return {label: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
            for label, v in sums.items()}


def _noise(seed: int, r: int, key: tuple, new: np.ndarray) -> np.ndarray:
    """Standard normal draws tied to (seed, draw, unit, the point's place):
    the same point of the same unit gets the same draw in every candidate;
    repeats of one point in a candidate get successive ones."""
    out = np.empty(len(new))
    seen: dict[tuple, int] = {}
    unit_id = _unit_id(key)
    for i, c in enumerate(new):
        place = tuple(int(round(v * 1000)) % 2**32 for v in c)
        j = seen[place] = seen.get(place, -1) + 1
        out[i] = np.random.default_rng([seed, r, unit_id, *place, j]).standard_normal()
    return out


def _unit_id(key: tuple) -> int:
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16)


def rank(units: dict[tuple, Unit], quantities: Sequence[Quantity],
         candidates: Sequence[Candidate], n_draws: int = DRAWS, seed: int = 0,
         progress=None) -> tuple[dict[str, float], list[Outcome]]:
    """(widths now, outcomes best first by narrowing per hour). Quantities
    without a width now (too few draws) are left out of the headline."""
    base = base_draws(units, seed)
    now = widths_now(units, quantities, seed, base)
    headline = [q for q in quantities if math.isfinite(now[q.label]) and now[q.label] > 0]
    out = []
    for c in candidates:
        exp = expected_widths(units, headline, c, n_draws, seed, base)
        if progress is not None:
            progress()
        narrowing = {label: 1 - w / now[label] for label, w in exp.items() if math.isfinite(w)}
        mean = sum(narrowing.values()) / len(headline) if headline else 0.0
        out.append(Outcome(c, narrowing, mean))
    out.sort(key=lambda o: (-(o.per_hour if math.isfinite(o.per_hour) else -math.inf),
                            o.candidate.label))
    return {q.label: now[q.label] for q in headline}, out
