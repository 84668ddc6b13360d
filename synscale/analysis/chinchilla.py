"""L(N, D) = E + A/N^alpha + B/D^beta, fitted as in Chinchilla's approach 3.

Hoffmann et al. (2022) and Besiroglu et al. (2024): in log form,
log L ~ LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b,
E = e^e; a Huber loss (delta 1e-3) on the log-loss residuals, *summed*
over points (a mean shrinks the gradients until L-BFGS stops early, the
replication's point), minimized by L-BFGS-B from a grid of starts.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from synscale.analysis.fit import FitError

HUBER_DELTA = 1e-3
LOG_MAX = 700.0  # e^700 ~ 1e304: a log coefficient past it has diverged (and exp overflows)
NAMES = ("A", "B", "E", "alpha", "beta")
# Hoffmann's grid of starts, as the replication reused it: (a, b, e, alpha, beta)
GRID = {"a": np.arange(0, 26, 5.0), "b": np.arange(0, 26, 5.0), "e": np.arange(-1, 1.01, 0.5),
        "alpha": np.arange(0, 2.01, 0.5), "beta": np.arange(0, 2.01, 0.5)}


def _objective(theta, log_n, log_d, log_l, delta):
    """Summed Huber loss of the log-loss residuals, and its gradient."""
    loss, grad = objective_rows(np.asarray(theta)[None, :], log_n[None, :], log_d[None, :],
                                log_l[None, :], delta)
    return loss[0], grad[0]


def objective_rows(theta, log_n, log_d, log_l, delta):
    """_objective for many problems at once: theta (P, 5), the log arrays
    (P, points) or (1, points); each row's summed Huber loss and gradient
    (the screen of starts, and batch_fit's refits)."""
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    t_n, t_d = a - alpha * log_n, b - beta * log_d
    pred = np.logaddexp(np.logaddexp(t_n, t_d), e)
    r = pred - log_l
    small = np.abs(r) <= delta
    loss = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum(axis=1)
    dr = np.where(small, r, delta * np.sign(r))
    w_n, w_d, w_e = dr * np.exp(t_n - pred), dr * np.exp(t_d - pred), dr * np.exp(e - pred)
    grad = np.stack([w_n.sum(1), w_d.sum(1), w_e.sum(1), -(w_n * log_n).sum(1),
                     -(w_d * log_d).sum(1)], axis=1)
    return loss, grad


@dataclass(frozen=True)
class ChinchillaFit:
    params: dict[str, float]      # A, B, E, alpha, beta
    objective: float              # summed Huber loss at the optimum
    residuals: tuple[float, ...]  # log(measured) - log(fitted), per point
    rmse: float
    n_points: int
    n_range: tuple[float, float]  # measured model sizes
    d_range: tuple[float, float]  # measured data sizes
    theta: tuple = ()             # (a, b, e, alpha, beta) as optimized: E = e^e may underflow to 0

    def predict(self, n, d):
        p = self.params
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        out = p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict[str, Any]:
        return {"law": "chinchilla", "params": dict(self.params), "objective": self.objective,
                "rmse": self.rmse, "n_points": self.n_points, "n_range": list(self.n_range),
                "d_range": list(self.d_range), "residuals": list(self.residuals)}


def _points(n, d, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        n, d, loss = (np.asarray(v, dtype=float).ravel() for v in (n, d, loss))
    except (TypeError, ValueError) as e:
        raise FitError(f"model sizes, data sizes and losses must be numbers: {e}") from None
    if not n.size == d.size == loss.size:
        raise FitError(f"got {n.size} model sizes, {d.size} data sizes and {loss.size} losses; "
                       "they must pair up")
    problems = [f"{name} must be finite and > 0; {int(bad.sum())} point(s) are not"
                for name, v in (("model size", n), ("data size", d), ("loss", loss))
                if (bad := ~(np.isfinite(v) & (v > 0))).any()]
    if problems:
        raise FitError("; ".join(problems))
    # Two sizes give one difference per axis, which cannot separate a term's
    # scale from its exponent and the floor E: the fit would be any of many.
    if np.unique(n).size < 3 or np.unique(d).size < 3:
        raise FitError(f"L(N, D) needs at least 3 model sizes and 3 data sizes to tell A, "
                       f"alpha, B, beta and E apart; got {np.unique(n).size} model and "
                       f"{np.unique(d).size} data sizes")
    if n.size < 6:
        raise FitError(f"L(N, D) has 5 parameters; {n.size} points cannot test a fit of them "
                       "(need at least 6)")
    return n, d, loss


def _screen(grid: dict, log_n, log_d, log_l, delta: float, keep: int) -> np.ndarray:
    """The `keep` grid points with the lowest objective, best first: every
    start is scored (one array operation), the optimizer runs from the best."""
    starts = np.array(list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"],
                                             grid["beta"])))
    score, _ = objective_rows(starts, log_n[None, :], log_d[None, :], log_l[None, :], delta)
    return starts[np.argsort(score, kind="stable")[:keep]]


def fit_chinchilla(n, d, loss, x0=None, grid: dict | None = None, refine: int = 64,
                   delta: float = HUBER_DELTA) -> ChinchillaFit:
    """Best L-BFGS-B fit from the `refine` best points of the grid of starts
    (or from the single start x0 = (a, b, e, alpha, beta), as a bootstrap
    refit does)."""
    n, d, loss = _points(n, d, loss)
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    candidates = [x0] if x0 is not None else _screen(grid or GRID, log_n, log_d, log_l, delta,
                                                     refine)
    best = None
    for start in candidates:
        # tolerances far below the default: the summed Huber loss is ~1e-3
        # here, and its gradients smaller, so the defaults stop at the start
        r = optimize.minimize(_objective, np.asarray(start, dtype=float), jac=True,
                              args=(log_n, log_d, log_l, delta), method="L-BFGS-B",
                              options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    if best is None:
        raise FitError("L(N, D) did not converge from any start")
    a, b, e, alpha, beta = best.x
    if max(a, b, e) > LOG_MAX:  # ran off along a flat direction (a resample with few sizes)
        raise FitError(f"L(N, D) diverged: log A, log B, log E = {a:.3g}, {b:.3g}, {e:.3g}")
    params = {"A": math.exp(a), "B": math.exp(b), "E": math.exp(e),
              "alpha": float(alpha), "beta": float(beta)}
    fit = ChinchillaFit(params, float(best.fun), (), 0.0, int(n.size),
                        (float(n.min()), float(n.max())), (float(d.min()), float(d.max())))
    res = log_l - np.log(fit.predict(n, d))
    return ChinchillaFit(params, fit.objective, tuple(float(v) for v in res),
                         float(np.sqrt(np.mean(res ** 2))), fit.n_points, fit.n_range,
                         fit.d_range, tuple(float(v) for v in best.x))


def log_params(fit: ChinchillaFit) -> tuple[float, ...]:
    """(a, b, e, alpha, beta): a start for refits near this one (the
    optimizer's own values: a fitted E of 0 has no logarithm)."""
    return fit.theta
