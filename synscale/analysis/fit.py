"""Power-law fits of loss against data size, per series.

Three laws, all fitted on log loss so that every point weighs by its
relative error (losses span an order of magnitude across a sweep, and the
small ones at large sizes are the ones the extrapolation rests on):

    power          L = A * x^-k          linear least squares on (log x, log L)
    power+offset   L = E + A * x^-k      bounded least squares, 0 <= E < min(L),
                                         from a grid of starts
    saturating     L = E + A * (x + D0)^-k   the same, with D0 >= 0: the curve
                                         flattens below D0, as near chance at a
                                         few images per class (Zhai et al.,
                                         "Scaling Vision Transformers", 2022)

A series is the set of rows that share every axis column; its points are the
data sizes and losses of those rows. Inputs a law cannot be fitted to raise
`FitError` with what is wrong, rather than returning a number that looks
like a result; `fit_series` keeps the message on the series so one broken
series does not hide the others.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from synscale.analysis.errors import FitError  # noqa: F401 (fit.FitError: the fitters raise it)

# Axis columns of the metrics table; rows sharing all of them form a series.
# templates: the zero-shot template set of a CLIP evaluation.
DEFAULT_AXES = ("eval_set", "templates", "source", "generator", "prompts", "guidance",
                "synthetic_share", "curation", "arch", "width")
# Axes that say where the training data came from. Two series that differ
# only in these are the same model on the same eval set, so comparable.
SOURCE_AXES = ("source", "generator", "prompts", "guidance", "synthetic_share", "curation")
LAWS = ("power", "power+offset", "saturating")
# Distinct sizes each law needs: more than its parameter count, so that the
# fit is tested by at least one point rather than passing through all of them.
MIN_SIZES = {"power": 3, "power+offset": 4, "saturating": 5}
# The offset law's exponent is searched in [0, K_MAX]; measured data-scaling
# exponents are well below 1, so this only keeps the optimizer from running off.
K_MAX = 10.0
# The saturating law's D0 is searched in [0, D0_MAX x the smallest size]: a knee
# further out than that is not measured by the sweep.
D0_MAX = 100.0


@dataclass(frozen=True)
class PowerFit:
    law: str                     # "power" or "power+offset"
    params: dict[str, float]     # A, k, E (0 for "power"); D0 for "saturating" only
    residuals: tuple[float, ...]  # log(measured) - log(fitted), per point, in input order
    rmse: float                  # root mean square of `residuals` (log space)
    n_points: int                # points fitted, repeats of a size included
    x_min: float                 # smallest measured size: below it, predictions extrapolate
    x_max: float                 # largest measured size: above it, predictions extrapolate

    def predict(self, x):
        """Loss at size(s) x; a float for a scalar, an array otherwise."""
        p = self.params
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = p["E"] + p["A"] * np.power(np.asarray(x, dtype=float) + p.get("D0", 0.0),
                                              -p["k"])
        return float(out) if np.ndim(out) == 0 else out

    def inverse(self, loss):
        """Size(s) at which the curve reaches `loss`; NaN where it never does.

        A loss at or below the floor E is unreachable, and so is every loss
        when the curve does not move with size (k == 0).
        """
        p = self.params
        loss = np.asarray(loss, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            excess = loss - p["E"]
            out = np.power(p["A"] / excess, 1.0 / p["k"]) - p.get("D0", 0.0) if p["k"] != 0 \
                else np.full(loss.shape, np.nan)
            out = np.where((excess > 0) & np.isfinite(out) & (out > 0), out, np.nan)
        return float(out) if np.ndim(out) == 0 else out

    def in_range(self, x: float) -> bool:
        """Whether size x lies within the measured sizes (no extrapolation).

        The ends get a relative slack of 1e-6: an inverse that lands on the
        largest measured size is not an extrapolation because of rounding.
        """
        slack = 1 + 1e-6
        return bool(np.isfinite(x)) and self.x_min / slack <= x <= self.x_max * slack

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.law, "params": dict(self.params), "rmse": self.rmse,
                "n_points": self.n_points, "x_min": self.x_min, "x_max": self.x_max,
                "residuals": list(self.residuals)}


def _check_points(x, y, law: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of the points, or FitError listing every problem found."""
    try:
        xs = np.asarray(x, dtype=float).ravel()
        ys = np.asarray(y, dtype=float).ravel()
    except (TypeError, ValueError) as e:
        raise FitError(f"sizes and losses must be numbers: {e}") from None
    if xs.size != ys.size:
        raise FitError(f"got {xs.size} sizes but {ys.size} losses; they must pair up")
    problems = []
    for name, v in (("size", xs), ("loss", ys)):
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            problems.append(f"{name} is NaN or inf at point(s) {_where(bad, xs, name == 'loss')}")
        nonpos = np.flatnonzero(np.isfinite(v) & (v <= 0))
        if nonpos.size:
            problems.append(f"{name} must be > 0 for a log-log fit; got "
                            f"{_list(v[nonpos])} at point(s) {_where(nonpos, xs, name == 'loss')}")
    finite_x = xs[np.isfinite(xs) & (xs > 0)]
    distinct = np.unique(finite_x)
    need = MIN_SIZES[law]
    if distinct.size < need:
        problems.append(f"law {law!r} needs at least {need} distinct positive sizes, got "
                        f"{distinct.size} ({_list(distinct) or 'none'}) from {xs.size} point(s)")
    if problems:
        raise FitError("; ".join(problems))
    if np.ptp(ys) <= 1e-12 * np.max(np.abs(ys)):
        raise FitError(f"loss is constant ({ys[0]:.6g}) across sizes {_list(distinct)}; "
                       f"there is no exponent to fit")
    return xs, ys


def _where(idx: np.ndarray, xs: np.ndarray, with_size: bool) -> str:
    """Point indices, with their sizes when the problem is in the loss."""
    parts = [f"{i} (size {xs[i]:.6g})" if with_size else str(i) for i in idx[:5]]
    return ", ".join(parts) + (" ..." if idx.size > 5 else "")


def _list(v: Iterable[float]) -> str:
    v = list(v)
    return ", ".join(f"{a:.6g}" for a in v[:8]) + (" ..." if len(v) > 8 else "")


def _finish(law: str, xs: np.ndarray, ys: np.ndarray, A: float, k: float, E: float,
            **extra: float) -> PowerFit:
    params = {"A": float(A), "k": float(k), "E": float(E), **{n: float(v) for n, v in extra.items()}}
    fit = PowerFit(law, params, (), 0.0, int(xs.size), float(xs.min()), float(xs.max()))
    res = np.log(ys) - np.log(fit.predict(xs))
    if not np.all(np.isfinite(res)):
        raise FitError(f"law {law!r} fitted to parameters A={A:.6g}, k={k:.6g}, E={E:.6g} "
                       f"that do not reproduce the points (non-finite residuals)")
    return PowerFit(law, fit.params, tuple(float(r) for r in res),
                    float(np.sqrt(np.mean(res ** 2))), fit.n_points, fit.x_min, fit.x_max)


def fit_power(x, y) -> PowerFit:
    """L = A * x^-k by least squares on (log x, log L)."""
    xs, ys = _check_points(x, y, "power")
    lr = stats.linregress(np.log(xs), np.log(ys))
    return _finish("power", xs, ys, A=math.exp(lr.intercept), k=-lr.slope, E=0.0)


def fit_power_offset(x, y, start: Mapping[str, float] | None = None) -> PowerFit:
    """L = E + A * x^-k with 0 <= E < min(L), on log loss, best of a grid of
    starts (or from `start`, parameters near the answer, as a bootstrap refit)."""
    return _fit_offset("power+offset", x, y, start)


def fit_saturating(x, y, start: Mapping[str, float] | None = None) -> PowerFit:
    """L = E + A * (x + D0)^-k with 0 <= E < min(L) and D0 >= 0, as fit_power_offset."""
    return _fit_offset("saturating", x, y, start)


def _fit_offset(law: str, x, y, start: Mapping[str, float] | None) -> PowerFit:
    """The two laws with a floor E, by bounded least squares on log loss.

    Sizes are divided by the smallest one inside the optimizer so that A stays
    near the losses whatever the units (per class or total images); the
    returned A and D0 are in the caller's units.
    """
    xs, ys = _check_points(x, y, law)
    knee = law == "saturating"
    x0 = xs.min()
    u = xs / x0
    logy = np.log(ys)
    e_hi = ys.min() * (1 - 1e-9)

    def resid(p):
        E, log_a, k = p[:3]
        d = p[3] if knee else 0.0
        with np.errstate(over="ignore", under="ignore"):
            return np.log(E + np.exp(log_a) * (u + d) ** -k) - logy

    def jac(p):  # analytic: half the cost of finite differences, per bootstrap refit
        E, log_a, k = p[:3]
        d = p[3] if knee else 0.0
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            term = np.exp(log_a) * (u + d) ** -k
            f = E + term
            cols = [1 / f, term / f, -term * np.log(u + d) / f]
            if knee:
                cols.append(-k * term / (u + d) / f)
        return np.stack(cols, axis=1)

    if start is not None:
        k0 = min(max(start["k"], 0.0), K_MAX)
        d0 = min(max(start.get("D0", 0.0) / x0, 0.0), D0_MAX)
        starts = [(min(max(start["E"], 0.0), e_hi),
                   math.log(start["A"] * x0 ** -k0), k0, d0)]
    else:
        starts = []
        for e_frac in (0.0, 0.5, 0.9):
            for k0 in (0.1, 0.3, 1.0, 3.0):
                for d0 in ((0.0, 1.0, 10.0) if knee else (0.0,)):
                    E0 = e_frac * ys.min()
                    # ys > E0; the curve's value at the smallest size is A (1 + d0)^-k0
                    a0 = float(np.median(ys - E0)) * (1 + d0) ** k0
                    starts.append((E0, math.log(a0), k0, d0))
    lower, upper = [0.0, -np.inf, 0.0, 0.0], [e_hi, np.inf, K_MAX, D0_MAX]
    n = 4 if knee else 3
    best = None
    for p0 in starts:
        try:
            r = optimize.least_squares(resid, p0[:n], jac=jac, bounds=(lower[:n], upper[:n]),
                                       x_scale=[ys.min(), 1.0, 1.0, 1.0][:n], method="trf")
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    if best is None:
        raise FitError(f"law {law!r} did not converge from any of {len(starts)} starts")
    E, log_a, k = best.x[:3]
    extra = {"D0": best.x[3] * x0} if knee else {}
    return _finish(law, xs, ys, A=math.exp(log_a) * x0 ** k, k=k, E=E, **extra)


FITTERS = {"power": fit_power, "power+offset": lambda x, y: fit_power_offset(x, y),
           "saturating": lambda x, y: fit_saturating(x, y)}


def refit(law: str, x, y, start: Mapping[str, float]) -> PowerFit:
    """A bootstrap resample's fit: from `start` (the full fit's parameters)
    where the law is fitted iteratively."""
    return fit_power(x, y) if law == "power" else _fit_offset(law, x, y, start)


def fit_law(x, y, law: str = "power") -> PowerFit:
    if law not in FITTERS:
        raise ValueError(f"unknown law {law!r}; allowed: {', '.join(LAWS)}")
    return FITTERS[law](x, y)


@dataclass(frozen=True)
class LawFit:
    """One law fitted to one series: the fit or why there is none, and its
    bootstrap interval when one was asked for."""
    law: str
    fit: PowerFit | None
    error: str | None = None
    interval: Any = None  # bootstrap.Interval

    def to_dict(self) -> dict[str, Any]:
        if self.fit is None:
            return {"law": self.law, "error": self.error}
        out = self.fit.to_dict()
        if self.interval is not None:
            out["bootstrap"] = self.interval.to_dict()
        return out


@dataclass(frozen=True)
class SeriesFit:
    key: dict[str, Any]      # axis column -> value ("" and None both read as None)
    x: tuple[float, ...]     # sizes, ascending; a size repeats when several runs measured it
    y: tuple[float, ...]     # metric at each size (NaN where a row had none)
    laws: dict[str, LawFit]  # every law fitted, by name
    lead: str = "power"      # the law the tables and comparisons read

    @property
    def fit(self) -> PowerFit | None:
        return self.laws[self.lead].fit

    @property
    def error(self) -> str | None:
        return self.laws[self.lead].error

    @property
    def interval(self):
        return self.laws[self.lead].interval

    @property
    def source(self) -> Any:
        return self.key.get("source")

    def to_dict(self) -> dict[str, Any]:
        return {"key": dict(self.key), "x": list(self.x), "y": [_json_num(v) for v in self.y],
                "lead_law": self.lead, "fits": {k: v.to_dict() for k, v in self.laws.items()}}


def _norm(v: Any) -> Any:
    """One value for "no value": CSV rows carry "", in-memory rows carry None."""
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _num(v: Any) -> float:
    v = _norm(v)
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _json_num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def sort_key(key: Mapping[str, Any]) -> tuple:
    """Orders series keys: missing values first, numbers by value, then text."""
    out = []
    for v in key.values():
        if v is None:
            out.append((0, 0.0, ""))
            continue
        try:
            out.append((1, float(v), ""))
        except (TypeError, ValueError):
            out.append((2, 0.0, str(v)))
    return tuple(out)


def _law_fit(law: str, xs, ys, bootstrap: int, seed: int, progress) -> LawFit:
    try:
        fit = fit_law(xs, ys, law)
    except FitError as e:
        return LawFit(law, None, str(e))
    interval = None
    # Resampling a series of barely more points than parameters gives back
    # the same few fits, an interval of zero width that looks like certainty.
    if bootstrap and len(xs) >= MIN_SIZES[law] + 2:
        from synscale.analysis.bootstrap import bootstrap as resample
        xa, ya = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        interval = resample(lambda i: refit(law, xa[i], ya[i], fit.params).params, len(xa),
                            bootstrap, seed, progress)
    return LawFit(law, fit, None, interval)


def fit_series(rows: Sequence[Mapping[str, Any]], x: str = "images_per_class", y: str = "loss",
               axes: Sequence[str] | None = None, law: str = "power",
               laws: Sequence[str] | None = None, bootstrap: int = 0, seed: int = 0,
               progress=None) -> list[SeriesFit]:
    """Group metric rows into series by `axes` and fit `y` against `x` in each,
    with every law in `laws` (default: all), `law` leading.

    Rows may come from memory or from metrics.csv (values as strings). Without
    `axes`, the DEFAULT_AXES the rows have (a table from before an axis
    existed still fits). A series whose points cannot be fitted gets
    `fit=None` and the reason in `error`; a mistake that concerns the whole
    table (unknown law, a column no row has, a row missing an axis) raises
    ValueError. `bootstrap` resamples per fit (seeded) give each parameter a
    standard error and a 95% interval; `progress()` is called after each.
    """
    laws = list(laws) if laws is not None else list(LAWS)
    for name in {law, *laws}:
        if name not in FITTERS:
            raise ValueError(f"unknown law {name!r}; allowed: {', '.join(LAWS)}")
    if law not in laws:
        laws.insert(0, law)
    rows = list(rows)
    axes = list(axes) if axes is not None else [a for a in DEFAULT_AXES
                                                if any(a in r for r in rows)]
    if not rows:
        return []
    for col, what in ((x, "x"), (y, "y")):
        if not any(col in r for r in rows):
            raise ValueError(f"{what}={col!r} is not a column of the metrics rows; "
                             f"columns: {', '.join(sorted({c for r in rows for c in r}))}")
    missing = [f"row {i} lacks {', '.join(a for a in axes if a not in r)}"
               for i, r in enumerate(rows) if any(a not in r for a in axes)]
    if missing:
        raise ValueError(f"series axes {axes} must be columns of every row: "
                         + "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))

    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        groups.setdefault(tuple(_norm(r[a]) for a in axes), []).append((_num(r.get(x)), _num(r.get(y))))

    out = []
    for values in sorted(groups, key=lambda t: sort_key(dict(zip(axes, t)))):
        pts = sorted(groups[values], key=lambda p: (math.isnan(p[0]), p[0]))
        xs = tuple(p[0] for p in pts)
        ys = tuple(p[1] for p in pts)
        fits = {name: _law_fit(name, xs, ys, bootstrap, seed, progress) for name in laws}
        out.append(SeriesFit(dict(zip(axes, values)), xs, ys, fits, law))
    return out


@dataclass(frozen=True)
class Equivalence:
    real: dict[str, Any]        # key of the real series
    synthetic: dict[str, Any]   # key of the synthetic series it is compared with
    real_size: float            # a measured real size
    target_loss: float          # the real fit's loss at `real_size`
    synthetic_size: float       # synthetic size whose fitted loss is `target_loss`; NaN if none
    multiplier: float           # synthetic_size / real_size (>1: synthetic images are worth less)
    extrapolated: bool          # synthetic_size outside the measured synthetic sizes, or NaN
    note: str = ""              # why it is extrapolated or NaN; empty otherwise

    def to_dict(self) -> dict[str, Any]:
        return {"real": dict(self.real), "synthetic": dict(self.synthetic),
                "real_size": self.real_size, "target_loss": _json_num(self.target_loss),
                "synthetic_size": _json_num(self.synthetic_size),
                "multiplier": _json_num(self.multiplier),
                "extrapolated": self.extrapolated, "note": self.note}


def comparable(a: Mapping[str, Any], b: Mapping[str, Any],
               source_axes: Sequence[str] = SOURCE_AXES) -> bool:
    """Same model on the same eval set: equal on every axis that is not a source axis."""
    shared = (set(a) | set(b)) - set(source_axes)
    return all(_norm(a.get(c)) == _norm(b.get(c)) for c in shared)


def synthetic_equivalence(fits: Sequence[SeriesFit], real: str = "real",
                          source_axes: Sequence[str] = SOURCE_AXES) -> list[Equivalence]:
    """Synthetic images per class that match the real curve at each real size.

    For every real series with a fit, every measured real size s and every
    comparable synthetic series: target = real.predict(s), synthetic size =
    synthetic.inverse(target). Real series without a fit are skipped (the
    series table shows why); synthetic ones without a fit give NaN rows that
    carry their error, so a missing comparison is visible rather than absent.
    """
    reals = [f for f in fits if f.source == real and f.fit is not None]
    synths = [f for f in fits if f.source is not None and f.source != real]
    out = []
    for r in reals:
        sizes = sorted({s for s in r.x if math.isfinite(s) and s > 0})
        for syn in (f for f in synths if comparable(r.key, f.key, source_axes)):
            for s in sizes:
                target = r.fit.predict(s)
                size, note = _match(syn, target)
                extrap = not (syn.fit is not None and syn.fit.in_range(size))
                if extrap and not note:
                    note = (f"{size:.4g} lies outside the measured synthetic sizes "
                            f"{syn.fit.x_min:.4g}..{syn.fit.x_max:.4g}")
                out.append(Equivalence(dict(r.key), dict(syn.key), float(s), float(target),
                                       size, size / s, extrap, note))
    return out


def _match(syn: SeriesFit, target: float) -> tuple[float, str]:
    """(synthetic size reaching `target`, note when there is none)."""
    if syn.fit is None:
        return math.nan, f"synthetic series has no fit: {syn.error}"
    p = syn.fit.params
    if p["k"] <= 0:
        return math.nan, f"synthetic loss does not fall with size (k={p['k']:.3g})"
    size = syn.fit.inverse(target)
    if math.isnan(size):
        return math.nan, (f"unreachable: target loss {target:.4g} is at or below the "
                          f"synthetic floor E={p['E']:.4g}")
    return size, ""
