"""L(N, D) fits: Besiroglu et al.'s replication of Chinchilla's approach 3
on the published points, through the command users run, and recovery of
known laws from noisy points; the compute-optimal split against its
closed form."""
import csv
import json
import math

import numpy as np
import pytest

from conftest import ROOT, run_tool
from synscale.analysis.chinchilla import fit_chinchilla
from synscale.analysis.fit import FitError
from synscale.analysis.model_size import StepRule, compute_optimal

DATA = ROOT / "tests/data/chinchilla/svg_extracted_data.csv"
# Besiroglu et al. 2024, notebook output (tests/data/chinchilla/SOURCE.md): estimate, SE
PUBLISHED = {"A": (482.00572, 124.52232), "B": (2085.43420, 1293.28410),
             "E": (1.81686, 0.02566), "alpha": (0.34781, 0.01540), "beta": (0.36585, 0.02060)}


def chinchilla_points():
    with open(DATA, newline="") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]  # their outlier rule: drop the 5 highest losses
    return n[keep], (c / (6 * n))[keep], loss[keep]


@pytest.mark.slow
def test_reproduces_the_chinchilla_replication_through_fit_curves(tmp_path):
    n, d, loss = chinchilla_points()
    assert len(n) == 240
    points = tmp_path / "chinchilla.csv"
    with open(points, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "D", "loss"])
        w.writerows(zip(n, d, loss))
    r = run_tool("fit_curves.py", points, "--law", "chinchilla", "--x", "D", "--y", "loss",
                 "--n", "N", "--bootstrap", "600", "--seed", "42", "--json", timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    (fit,) = json.loads(r.stdout)["fits"]
    assert fit["law"] == "chinchilla" and fit["n_points"] == 240 and fit["group"] == {}
    p, se = fit["params"], fit["se"]
    # the grid-search optimum of their notebook, to its printed digits
    assert p["alpha"] == pytest.approx(0.34731, abs=5e-5)
    assert p["beta"] == pytest.approx(0.36718, abs=5e-5)
    assert p["E"] == pytest.approx(1.8172, abs=5e-4)
    assert fit["objective"] == pytest.approx(0.0010183, rel=1e-3)
    for name in ("alpha", "beta", "E"):  # within one standard error of the published estimate
        value, published_se = PUBLISHED[name]
        assert abs(p[name] - value) < published_se, name
    for name, (_, published_se) in PUBLISHED.items():  # bootstrap SEs within 25% of theirs
        assert se[name] == pytest.approx(published_se, rel=0.25), (name, se[name])
        lo, hi = fit["ci95"][name]
        assert lo < p[name] < hi
    assert fit["bootstrap"] == {"resamples": 600, "failed": 0, "seed": 42}


@pytest.mark.parametrize("noise", [0.0, 0.005, 0.02])
def test_recovers_a_known_law_from_noisy_points(noise):
    true = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    rng = np.random.default_rng(7)
    n, d = (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 1e10, 8),
                                           np.geomspace(1e9, 1e12, 8)))
    loss = (true["E"] + true["A"] * n ** -true["alpha"] + true["B"] * d ** -true["beta"]) \
        * np.exp(rng.normal(0, noise, n.size))
    fit = fit_chinchilla(n, d, loss)
    tol = {"alpha": 0.005 + 3 * noise, "beta": 0.005 + 3 * noise, "E": 0.01 + 10 * noise}
    for name, t in tol.items():
        assert fit.params[name] == pytest.approx(true[name], abs=t), name
    assert fit.rmse < 2 * noise + 1e-6


def test_degenerate_points_say_what_is_wrong():
    n, d = np.array([1e8] * 8), np.geomspace(1e9, 1e11, 8)
    with pytest.raises(FitError, match="at least 3 model sizes and 3 data sizes .* got 1 model"):
        fit_chinchilla(n, d, np.linspace(3, 2, 8))
    with pytest.raises(FitError, match="loss must be finite and > 0; 1 point"):
        fit_chinchilla(np.geomspace(1e7, 1e9, 8), d, [3, 2.9, np.nan, 2.7, 2.6, 2.5, 2.4, 2.3])
    with pytest.raises(FitError, match="got 2 model and 4 data sizes"):
        fit_chinchilla([1e7, 1e8] * 4, np.repeat([1e9, 1e10, 1e11, 1e12], 2), np.linspace(3, 2, 8))
    with pytest.raises(FitError, match="need at least 6"):
        fit_chinchilla([1e7, 1e8, 1e9], [1e9, 1e10, 1e11], [3, 2.5, 2.2])


def test_compute_optimal_split_matches_its_closed_form():
    """With F(N) = c N and a fixed number of epochs, N * D = C / (3 c epochs)
    and the optimum of A N^-a + B D^-b has a closed form."""
    from synscale.analysis.chinchilla import ChinchillaFit

    p = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}
    fit = ChinchillaFit(p, 0.0, (), 0.0, 0, (1e6, 1e9), (1e6, 1e9))
    rule = StepRule(epochs=2.0, batch_size=64, min_steps=1, max_steps=10**15)
    c = 6.0  # forward FLOPs per sample per parameter
    budgets = [1e17, 1e19]
    for o, budget in zip(compute_optimal(fit, (c, 1.0), rule, budgets, grid=4000), budgets):
        x = budget / (3 * c * rule.epochs)  # N * D
        a, b = p["alpha"], p["beta"]
        g = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
        n_star = g * x ** (b / (a + b))
        assert o["parameters"] == pytest.approx(n_star, rel=0.01)
        assert o["images"] == pytest.approx(x / n_star, rel=0.01)
        assert math.isclose(o["loss"], fit.predict(o["parameters"], o["images"]))
    # a budget the cap on steps cannot spend, and one beyond the measured sizes
    capped = StepRule(epochs=2.0, batch_size=64, min_steps=10, max_steps=20)
    (o,) = compute_optimal(fit, (c, 1.0), capped, [1e30])
    assert "parameters" not in o and "cap" in o["note"]
    (o,) = compute_optimal(fit, (c, 1.0), rule, [1e25])
    assert "outside the measured" in o["note"]


def test_a_law_without_a_floor_fits_and_bootstraps():
    """Losses with no irreducible term drive E towards 0 (e^e underflows):
    the fit, its refits and the interval still work."""
    from synscale.analysis.points import fit_chinchilla_group

    n, d = (v.ravel() for v in np.meshgrid(np.geomspace(1e4, 1e6, 3), np.geomspace(40, 1280, 6)))
    loss = 30 * n ** -0.3 + 8 * d ** -0.5
    entry, fit = fit_chinchilla_group({}, n, d, loss, bootstrap=20, seed=0)
    assert fit is not None and fit.params["E"] < 1e-3 and entry["bootstrap"]["resamples"] > 0
    assert fit.params["alpha"] == pytest.approx(0.3, abs=0.02)


def test_a_refit_that_runs_off_is_a_failed_resample_not_an_overflow(monkeypatch):
    """A bootstrap resample of few distinct sizes can let log A run off along
    a flat direction (seen in the embedded demo with three widths: e^a
    overflowed and the whole analysis stopped). It is a FitError, which the
    bootstrap counts as a failed resample, and the batched refits drop it."""
    import types

    from scipy import optimize

    from synscale.analysis import batch_fit, chinchilla
    n = np.repeat([2e4, 8e4, 3e5], 3)
    d = np.tile([40.0, 80.0, 160.0], 3)
    loss = 0.2 + 40 * n ** -0.3 + 30 * d ** -0.5
    ran_off = types.SimpleNamespace(x=np.array([812.0, 3.0, -1.0, 60.0, 0.5]), fun=1e-3)
    monkeypatch.setattr(optimize, "minimize", lambda *a, **k: ran_off)
    with pytest.raises(FitError, match="diverged"):
        chinchilla.fit_chinchilla(n, d, loss, x0=(5.0, 3.0, -1.0, 0.3, 0.5))
    monkeypatch.setattr(batch_fit, "lbfgs", lambda fun, x: (np.tile(ran_off.x, (len(x), 1)),
                                                            np.full(len(x), 1e-3)))
    idx = np.tile(np.arange(n.size), (4, 1))
    (draws,) = batch_fit.chinchilla(n, d, loss[None, :], idx, (5.0, 3.0, -1.0, 0.3, 0.5))
    assert draws["alpha"].size == 0
