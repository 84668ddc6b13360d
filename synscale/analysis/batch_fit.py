"""Bootstrap refits of one series, every resample at once (numpy over a
leading resample axis), for --suggest's simulation: it refits each series
tens of thousands of times (16 draws x 200 resamples x every candidate), far
too many for scipy's one-fit-at-a-time optimizers (~3 ms a refit of an
offset law: hours on a study of a hundred series).

    power          closed-form least squares on (log x, log L)
    power+offset,  Levenberg-Marquardt on log loss from the full fit's
    saturating     parameters, all resamples in lockstep, each step
                   projected onto fit.py's bounds (0 <= E < min L of the
                   resample, 0 <= k <= K_MAX, 0 <= D0 <= D0_MAX x smallest size)

The offset laws' answers are those of fit.refit up to the optimizer's
tolerance where the fit is well determined (tests/test_suggest.py compares
the two on a bootstrap); where a parameter sits at its bound they can
differ more, in both directions.

    chinchilla     L(N, D)'s summed Huber loss on log loss
                   (chinchilla.py), by L-BFGS from the full fit's
                   parameters, every problem with its own history and line
                   search (one scipy L-BFGS over all of them stacked does
                   not converge: their curvatures mix)

A resample with fewer distinct sizes than the law needs fails (dropped), as
the one-at-a-time fit would raise.
"""
from __future__ import annotations

import numpy as np

from synscale.analysis.fit import D0_MAX, K_MAX, MIN_SIZES

STEPS = 100  # LM iterations at most (scipy's trf: 100 x parameters evaluations)
FTOL = 1e-8  # converged: no step gains more than this share of the cost (scipy's default)


def _enough_sizes(X: np.ndarray, law: str) -> np.ndarray:
    distinct = 1 + (np.diff(np.sort(X, axis=1), axis=1) > 1e-12).sum(axis=1)
    return distinct >= MIN_SIZES[law]


def _split(values: dict[str, np.ndarray], which: np.ndarray, sets: int) -> list[dict]:
    """Per data set, the draws of its resamples that were fitted."""
    return [{k: v[which == i] for k, v in values.items()} for i in range(sets)]


def power(x: np.ndarray, ys: np.ndarray, idx: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Draws per row of `ys` (data sets measured at sizes x), resamples `idx`."""
    ok = _enough_sizes(np.log(x)[idx], "power")
    idx = idx[ok]
    X = np.tile(np.log(x)[idx], (len(ys), 1))
    Y = np.log(ys)[:, idx].reshape(-1, idx.shape[1])
    xm, ym = X.mean(axis=1), Y.mean(axis=1)
    slope = ((X - xm[:, None]) * (Y - ym[:, None])).sum(axis=1) / \
        ((X - xm[:, None]) ** 2).sum(axis=1)
    zero = np.zeros_like(slope)
    return _split({"A": np.exp(ym - slope * xm), "k": -slope, "E": zero, "D0": zero},
                  np.repeat(np.arange(len(ys)), len(idx)), len(ys))


def offset(x: np.ndarray, ys: np.ndarray, idx: np.ndarray, start: dict[str, float],
           law: str) -> list[dict[str, np.ndarray]]:
    """L = E + A (x + D0)^-k (D0 = 0 for power+offset), per row of `ys`.

    Every (data set, resample) is one problem; a problem leaves the batch
    when it has converged (a step that gains less than FTOL of its cost, or
    a damping so large that no step is taken), so the few slow ones that
    creep along a flat direction do not keep the whole batch iterating.
    """
    knee = law == "saturating"
    x0 = float(x.min())
    ok = _enough_sizes(np.log(x)[idx], law)
    idx = idx[ok]
    U = np.tile((x / x0)[idx], (len(ys), 1))
    Y = ys[:, idx].reshape(-1, idx.shape[1])
    which = np.repeat(np.arange(len(ys)), len(idx))
    logy = np.log(Y)
    e_hi = Y.min(axis=1) * (1 - 1e-9)
    k0 = min(max(start["k"], 0.0), K_MAX)
    theta = np.array([start["E"], np.log(start["A"] * x0 ** -k0), k0,
                      min(max(start.get("D0", 0.0) / x0, 0.0), D0_MAX)])[: 4 if knee else 3]
    P = np.repeat(theta[None, :], len(U), axis=0)
    P[:, 0] = np.minimum(np.maximum(P[:, 0], 0.0), e_hi)
    lower = np.array([0.0, -np.inf, 0.0, 0.0])[: P.shape[1]]
    upper = np.array([np.inf, np.inf, K_MAX, D0_MAX])[: P.shape[1]]
    eye = np.eye(P.shape[1])

    def residuals(P, U, logy):
        d = P[:, 3:4] if knee else 0.0
        with np.errstate(all="ignore"):
            return np.log(P[:, 0:1] + np.exp(P[:, 1:2]) * (U + d) ** -P[:, 2:3]) - logy

    def jacobian(P, U):
        d = P[:, 3:4] if knee else 0.0
        with np.errstate(all="ignore"):
            term = np.exp(P[:, 1:2]) * (U + d) ** -P[:, 2:3]
            f = P[:, 0:1] + term
            cols = [1 / f, term / f, -term * np.log(U + d) / f]
            if knee:
                cols.append(-P[:, 2:3] * term / (U + d) / f)
        return np.stack(cols, axis=2)  # (problems, points, parameters)

    r = residuals(P, U, logy)
    cost = np.sum(r * r, axis=1)
    lam = np.full(len(P), 1e-3)
    active = np.flatnonzero(np.isfinite(cost))
    for _ in range(STEPS):
        if active.size == 0:
            break
        Pa, Ua, ra = P[active], U[active], r[active]
        J = jacobian(Pa, Ua)
        Jt = J.transpose(0, 2, 1)
        JtJ = Jt @ J
        g = (Jt @ ra[:, :, None])[:, :, 0]
        damped = JtJ + lam[active, None, None] * (JtJ * eye + 1e-12 * eye)
        with np.errstate(all="ignore"):
            try:
                step = np.linalg.solve(damped, -g[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(a, -b, rcond=None)[0]
                                 for a, b in zip(damped, g)])
        trial = np.clip(Pa + step, lower, upper)
        trial[:, 0] = np.minimum(trial[:, 0], e_hi[active])
        r_trial = residuals(trial, Ua, logy[active])
        c_trial = np.sum(r_trial * r_trial, axis=1)
        c_now = cost[active]
        better = np.isfinite(c_trial) & (c_trial < c_now)
        done = (better & (c_now - c_trial <= FTOL * c_now)) | (lam[active] > 1e10)
        up = active[better]
        P[up], r[up], cost[up] = trial[better], r_trial[better], c_trial[better]
        lam[active] = np.where(better, lam[active] / 3, lam[active] * 3)
        active = active[~done]
    fine = np.isfinite(cost) & np.all(np.isfinite(P), axis=1)
    P, which = P[fine], which[fine]
    return _split({"A": np.exp(P[:, 1]) * x0 ** P[:, 2], "k": P[:, 2], "E": P[:, 0],
                   "D0": P[:, 3] * x0 if knee else np.zeros(len(P))}, which, len(ys))


LBFGS_MEMORY = 10     # history pairs per problem (scipy's default m)
LBFGS_STEPS = 5000    # iterations at most (chinchilla.fit_chinchilla's maxiter)


def chinchilla(n: np.ndarray, d: np.ndarray, ys: np.ndarray, idx: np.ndarray,
               start) -> list[dict[str, np.ndarray]]:
    """Draws of L(N, D)'s parameters per row of `ys` (data sets measured at
    model sizes n and data sizes d), resamples `idx`, each refit from `start`
    ((a, b, e, alpha, beta), chinchilla.log_params) with fit_chinchilla's
    tolerances. Measured against it on 300 resamples: alpha, beta, A, B of
    99-100% within 1e-3; E differs only where it sinks to 0 (e below -20)."""
    from synscale.analysis.chinchilla import HUBER_DELTA, LOG_MAX, objective_rows
    ok = np.array([np.unique(n[i]).size >= 3 and np.unique(d[i]).size >= 3 for i in idx],
                  dtype=bool)
    idx = idx[ok]
    log_n = np.tile(np.log(n)[idx], (len(ys), 1))
    log_d = np.tile(np.log(d)[idx], (len(ys), 1))
    log_l = np.log(ys)[:, idx].reshape(-1, idx.shape[1])
    which = np.repeat(np.arange(len(ys)), len(idx))
    theta = np.tile(np.asarray(start, dtype=float), (len(log_l), 1))

    def huber(X, rows):
        return objective_rows(X, log_n[rows], log_d[rows], log_l[rows], HUBER_DELTA)
    theta, f = lbfgs(huber, theta)
    # as fit_chinchilla: a refit whose log coefficients ran off has diverged
    fine = np.isfinite(f) & np.all(np.isfinite(theta), axis=1) & \
        (theta[:, :3].max(axis=1, initial=-np.inf) <= LOG_MAX)
    a, b, e, alpha, beta = theta[fine].T
    return _split({"A": np.exp(a), "B": np.exp(b), "E": np.exp(e), "alpha": alpha,
                   "beta": beta}, which[fine], len(ys))


def lbfgs(fun, x: np.ndarray, ftol: float = 1e-15, gtol: float = 1e-12,
          steps: int = LBFGS_STEPS, memory: int = LBFGS_MEMORY) -> tuple[np.ndarray, np.ndarray]:
    """Minimize P independent problems at once; fun(X, rows) -> (f, g) of the
    problems `rows` at parameters X (len(rows), k). Each problem keeps its own
    history and backtracking line search, and leaves the batch when it stops
    as scipy's L-BFGS-B would: a relative decrease <= ftol (of max(|f|, 1)),
    no gradient component above gtol, or no step that lowers f."""
    P, k = x.shape
    x = x.copy()
    f, g = fun(x, np.arange(P))
    S, Y, rho = np.zeros((P, memory, k)), np.zeros((P, memory, k)), np.zeros((P, memory))
    active = np.flatnonzero(np.isfinite(f) & (np.abs(g).max(axis=1) > gtol))
    dot = lambda u, v: np.einsum("pk,pk->p", u, v)  # noqa: E731
    for _ in range(steps):
        if active.size == 0:
            break
        xa, fa, ga, Sa, Ya, ra = x[active], f[active], g[active], S[active], Y[active], rho[active]
        # two-loop recursion, newest pair last; empty slots have rho 0
        q, alphas = ga.copy(), np.zeros((len(active), memory))
        for i in range(memory - 1, -1, -1):
            alphas[:, i] = ra[:, i] * dot(Sa[:, i], q)
            q -= alphas[:, i:i + 1] * Ya[:, i]
        yy = dot(Ya[:, -1], Ya[:, -1])
        gamma = np.where(ra[:, -1] > 0, dot(Sa[:, -1], Ya[:, -1]) / np.where(yy > 0, yy, 1), 0.0)
        # no history yet: a gradient step, shortened where the gradient is large
        # (the line search only halves it)
        gamma = np.where(gamma > 0, gamma, 1.0 / np.maximum(1.0, np.abs(ga).sum(axis=1)))
        r = gamma[:, None] * q
        for i in range(memory):
            r += Sa[:, i] * (alphas[:, i] - ra[:, i] * dot(Ya[:, i], r))[:, None]
        step = -r
        slope = dot(ga, step)
        uphill = ~(slope < 0)  # forget the history, go down the gradient
        if uphill.any():
            step[uphill] = -ga[uphill] / np.maximum(1.0, np.abs(ga[uphill]).sum(axis=1))[:, None]
            slope[uphill] = dot(ga[uphill], step[uphill])
            rho[active[uphill]] = 0.0
        t = np.ones(len(active))
        x_new, f_new, g_new = xa.copy(), fa.copy(), ga.copy()
        pending = np.arange(len(active))
        for _ in range(40):  # backtracking (Armijo) from the full step
            if pending.size == 0:
                break
            xt = xa[pending] + t[pending, None] * step[pending]
            ft, gt = fun(xt, active[pending])
            ok = np.isfinite(ft) & (ft <= fa[pending] + 1e-4 * t[pending] * slope[pending])
            x_new[pending[ok]], f_new[pending[ok]], g_new[pending[ok]] = xt[ok], ft[ok], gt[ok]
            t[pending[~ok]] *= 0.5
            pending = pending[~ok]
        moved = np.ones(len(active), dtype=bool)
        moved[pending] = False
        # no step along the quasi-Newton direction lowered f: as scipy, forget
        # the history and try the gradient once more before stopping
        retry = ~moved & (ra.any(axis=1))
        rho[active[retry]] = 0.0
        s, y = x_new - xa, g_new - ga
        sy = dot(s, y)
        keep = moved & (sy > 1e-10 * dot(y, y))
        upd = active[keep]
        S[upd], Y[upd], rho[upd] = (np.roll(v[upd], -1, axis=1) for v in (S, Y, rho))
        S[upd, -1], Y[upd, -1], rho[upd, -1] = s[keep], y[keep], 1.0 / sy[keep]
        x[active], f[active], g[active] = x_new, f_new, g_new
        drop = (fa - f_new) / np.maximum(np.maximum(np.abs(fa), np.abs(f_new)), 1.0)
        done = (~moved & ~retry) | (moved & (drop <= ftol)) | (np.abs(g_new).max(axis=1) <= gtol)
        active = active[~done]
    return x, f
