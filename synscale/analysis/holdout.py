"""How far a law holds: leave a series' largest size out, fit the smaller
ones, and see whether what was measured there falls in the band the fit
predicts.

A power law fitted on small sizes is easily trusted too far; this is the
check the scaling-law literature asks for before an extrapolation is
believed. The band is a 95% prediction interval in log loss for a new
measurement at the left-out size, as many repeats as were measured there:

    log L_pred +- t(0.975, n - p) * sqrt(var_boot + s^2 / repeats)

var_boot: the spread of the prediction over bootstrap refits of the kept
points (the parameters' uncertainty); s^2: the residual variance of the
kept fit with n - p degrees of freedom (the measurement noise).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from synscale.analysis.fit import MIN_SIZES, FitError, fit_law, refit

# fitted parameters of each law (the residuals' degrees of freedom)
PARAMETERS = {"power": 2, "power+offset": 3, "saturating": 4}


@dataclass(frozen=True)
class Holdout:
    law: str
    size: float                  # the left-out size: the largest measured
    measured: float              # geometric mean of the losses measured there
    predicted: float             # the kept points' fit at `size`
    band: tuple[float, float]    # 95% prediction band for `measured`
    kept_sizes: int              # distinct sizes fitted

    @property
    def error(self) -> float:
        """measured / predicted - 1."""
        return self.measured / self.predicted - 1

    @property
    def inside(self) -> bool:
        return self.band[0] <= self.measured <= self.band[1]

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.law, "size": self.size, "measured": self.measured,
                "predicted": self.predicted, "error": self.error, "band": list(self.band),
                "inside": self.inside, "kept_sizes": self.kept_sizes}


def holdout(xs: Sequence[float], ys: Sequence[float], law: str, resamples: int = 200,
            seed: int = 0) -> Holdout | None:
    """The check for one series and law; None when the series has too few
    sizes (the law's minimum, plus the one left out) or the kept points
    cannot be fitted."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    sizes = np.unique(x)
    if sizes.size < MIN_SIZES[law] + 1:
        return None
    top = sizes[-1]
    keep, left = x < top, x == top
    try:
        fit = fit_law(x[keep], y[keep], law)
    except FitError:
        return None
    dof = int(keep.sum()) - PARAMETERS[law]
    if dof < 1:
        return None
    s2 = float(np.sum(np.square(fit.residuals))) / dof
    center = math.log(fit.predict(top))
    var_boot = _prediction_variance(x[keep], y[keep], law, fit.params, top, resamples, seed)
    half = stats.t.ppf(0.975, dof) * math.sqrt(var_boot + s2 / int(left.sum()))
    measured = float(np.exp(np.mean(np.log(y[left]))))
    return Holdout(law, float(top), measured, math.exp(center),
                   (math.exp(center - half), math.exp(center + half)), int(sizes.size - 1))


def _prediction_variance(x, y, law: str, start: dict, at: float, resamples: int,
                         seed: int) -> float:
    """Variance of log L(at) over bootstrap refits of the points (0 without two)."""
    from synscale.analysis.bootstrap import bootstrap

    def log_prediction(i) -> dict[str, float]:
        p = refit(law, x[i], y[i], start).predict(at)
        if not (p > 0 and math.isfinite(p)):
            raise FitError(f"prediction {p} at {at}")  # counted as a failed resample
        return {"log_loss": math.log(p)}

    interval = bootstrap(log_prediction, x.size, resamples, seed)
    return interval.se["log_loss"] ** 2 if interval is not None else 0.0


def favored(checks: dict[str, Holdout | None]) -> str | None:
    """The law whose prediction of the left-out size came closest (in log loss)."""
    done = {law: h for law, h in checks.items() if h is not None}
    if not done:
        return None
    return min(done, key=lambda law: abs(math.log(done[law].measured / done[law].predicted)))


def holdout_checks(fits, resamples: int = 200, seed: int = 0, progress=None) -> list[dict]:
    """Per series (SeriesFit) with enough sizes for at least one law: the
    check for every law it was fitted with, and the law it favors."""
    out = []
    for f in fits:
        checks = {law: holdout(f.x, f.y, law, resamples, seed) for law in f.laws}
        if progress is not None:
            progress()
        done = [h for h in checks.values() if h is not None]
        if done:
            out.append({"key": dict(f.key), "size": done[0].size, "measured": done[0].measured,
                        "checks": checks, "favors": favored(checks)})
    return out


def to_json(checks: list[dict]) -> list[dict]:
    return [{**c, "checks": {law: h.to_dict() if h else None for law, h in c["checks"].items()}}
            for c in checks]
