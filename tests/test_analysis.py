"""What tools/fit_curves.py reports beyond one fit per series: bootstrap
intervals, fits of a plain CSV, per-class verdicts, and L(N, D) with its
compute-optimal split from a run's rows."""
import csv
import json

import numpy as np
import pytest

from conftest import run_tool
from synscale.analysis.fit import fit_series
from synscale.analysis.per_class import Criteria, classify, summarize


@pytest.mark.parametrize("law,true,noise", [("power", {"A": 4.0, "k": 0.4, "E": 0.0}, 0.01),
                                            ("power", {"A": 4.0, "k": 0.4, "E": 0.0}, 0.05),
                                            ("power+offset", {"A": 6.0, "k": 0.6, "E": 0.3}, 0.01)])
def test_bootstrap_intervals_cover_the_true_exponent(law, true, noise):
    """Over 20 noisy draws of one law, the 95% interval of k holds the true
    k in most of them, and its width grows with the noise."""
    sizes = np.repeat(np.geomspace(8, 1024, 8), 2)
    covered, widths = 0, []
    for draw in range(20):
        rng = np.random.default_rng(draw)
        loss = (true["E"] + true["A"] * sizes ** -true["k"]) * np.exp(rng.normal(0, noise, sizes.size))
        rows = [{"images_per_class": s, "loss": v} for s, v in zip(sizes, loss)]
        (f,) = fit_series(rows, axes=[], law=law, laws=[law], bootstrap=150, seed=draw)
        lo, hi = f.interval.ci95["k"]
        covered += lo <= true["k"] <= hi
        widths.append(hi - lo)
        assert f.fit.params["k"] == pytest.approx(true["k"], abs=10 * noise + 0.02)
    assert covered >= 15  # 95% nominal; a percentile bootstrap of 16 points runs a bit narrow
    assert np.median(widths) < 40 * noise + 0.02


def test_saturating_law_recovers_its_parameters_from_noisy_points():
    """L = E + A (D + D0)^-k, 1% noise, two repeats of nine sizes from 4 to
    1024 (the knee at D0 = 12 inside them): every parameter comes back."""
    from synscale.analysis.fit import fit_saturating
    true = {"A": 20.0, "k": 0.6, "E": 0.5, "D0": 12.0}
    sizes = np.repeat(np.geomspace(4, 1024, 9), 2)
    clean = true["E"] + true["A"] * (sizes + true["D0"]) ** -true["k"]
    for draw in range(5):
        rng = np.random.default_rng(draw)
        fit = fit_saturating(sizes, clean * np.exp(rng.normal(0, 0.01, sizes.size)))
        assert fit.params["k"] == pytest.approx(true["k"], rel=0.25)
        assert fit.params["D0"] == pytest.approx(true["D0"], rel=0.5)
        assert fit.params["E"] == pytest.approx(true["E"], abs=0.1)
        assert fit.rmse < 0.015
        # the curve itself, and its inverse, between the sizes measured
        assert fit.predict(100.0) == pytest.approx(true["E"] + true["A"] * 112.0 ** -0.6, rel=0.01)
        assert fit.inverse(fit.predict(100.0)) == pytest.approx(100.0)


def test_holdout_band_holds_the_left_out_point_about_95_percent_of_draws():
    """A known power law with 5% noise, seven sizes of two repeats: leave the
    largest out, fit the rest, and the measurement falls in the predicted 95%
    band in close to 95% of 200 draws, and the error is centred."""
    from synscale.analysis.holdout import holdout
    sizes = np.repeat([4, 8, 16, 32, 64, 128, 256], 2).astype(float)
    inside, errors = 0, []
    for draw in range(200):
        rng = np.random.default_rng(draw)
        loss = 3.0 * sizes ** -0.4 * np.exp(rng.normal(0, 0.05, sizes.size))
        h = holdout(sizes, loss, "power", resamples=60, seed=draw)
        assert h.size == 256 and h.kept_sizes == 6
        assert h.band[0] < h.predicted < h.band[1]
        inside += h.inside
        errors.append(np.log(h.measured / h.predicted))
    assert 0.88 <= inside / 200 <= 0.99
    assert abs(np.mean(errors)) < 0.02
    # too few sizes for a law: no check rather than a fit through every point
    assert holdout(sizes[:8], loss[:8], "power") is not None
    assert holdout(sizes[:8], loss[:8], "saturating") is None


def test_a_series_too_short_to_resample_gets_no_interval():
    rows = [{"images_per_class": s, "loss": 2.0 * s ** -0.3} for s in (4, 8, 16, 32)]
    (f,) = fit_series(rows, axes=[], laws=["power"], bootstrap=100)
    assert f.fit is not None and f.interval is None  # 4 points: resamples repeat the fit


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_fit_curves_fits_a_csv_per_group_with_intervals(tmp_path):
    sizes = np.geomspace(10, 1000, 6)
    rng = np.random.default_rng(1)
    rows = [("real", s, 3 * s ** -0.5 * np.exp(rng.normal(0, 0.01))) for s in sizes]
    rows += [("synthetic", s, 3 * s ** -0.3 * np.exp(rng.normal(0, 0.01))) for s in sizes]
    rows += [("broken", s, 1.0) for s in sizes[:3]]
    points = _write(tmp_path / "points.csv", ["source", "n", "loss"], rows)
    r = run_tool("fit_curves.py", points, "--law", "power", "--x", "n", "--y", "loss", "--group",
                 "source", "--bootstrap", "100", "--json")
    assert r.returncode == 0, r.stderr
    fits = {f["group"]["source"]: f for f in json.loads(r.stdout)["fits"]}
    assert fits["real"]["params"]["k"] == pytest.approx(0.5, abs=0.02)
    assert fits["synthetic"]["params"]["k"] == pytest.approx(0.3, abs=0.02)
    assert set(fits["real"]["se"]) == {"A", "k", "E"} and fits["real"]["n_points"] == 6
    lo, hi = fits["real"]["ci95"]["k"]
    assert lo < 0.5 < hi
    assert "params" not in fits["broken"] and "constant" in fits["broken"]["error"]
    # the terminal table says the same
    r = run_tool("fit_curves.py", points, "--law", "power", "--x", "n", "--y", "loss",
                 "--group", "source")
    assert r.returncode == 0 and "source=real" in r.stdout and "constant" in r.stdout
    # a column that is not there, an unknown law, chinchilla without --n: exit 2, nothing fitted
    for args, message in ((["--x", "size"], "--x size: not a column; columns: source, n, loss"),
                          (["--law", "cubic"], "--law cubic: unknown; allowed: power, "
                                               "power+offset, saturating, chinchilla"),
                          (["--law", "chinchilla"], "name the model-size column with --n")):
        base = {"--law": "power", "--x": "n", "--y": "loss"}
        base.update(dict(zip(args[::2], args[1::2])))
        r = run_tool("fit_curves.py", points, *[v for kv in base.items() for v in kv])
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_classes_are_labelled_easy_scaling_or_poor_by_the_criteria():
    sizes = [4, 8, 16, 32]
    # class 0: recognized from the start; 1: loss halves per 4x; 2: flat and low accuracy
    rows = [{"images_per_class": s,
             "per_class_top1": [0.95, 0.3 + 0.1 * i, 0.2],
             "per_class_loss": [0.2, 2.0 * s ** -0.5, 1.5 + 0.01 * (i % 2)]}
            for i, s in enumerate(sizes)]
    verdicts = classify(rows, ["zero", "one", "two"], Criteria(easy_top1=0.9, scaling_k=0.3))
    assert [v.category for v in verdicts] == ["easy", "scaling", "poor"]
    assert verdicts[1].k == pytest.approx(0.5) and verdicts[0].top1_at_smallest == 0.95
    summary = summarize(verdicts)
    assert summary["counts"] == {"easy": 1, "scaling": 1, "poor": 1}
    assert summary["classes"]["poor"] == ["two"]
    # a stricter bar for "scaling" makes class 1 poor
    strict = classify(rows, ["zero", "one", "two"], Criteria(easy_top1=0.9, scaling_k=0.6))
    assert [v.category for v in strict] == ["easy", "poor", "poor"]


def test_run_analysis_fits_l_of_n_and_d_and_splits_compute(tmp_path):
    """Rows as a run gathers them, for three model widths and six data
    sizes drawn from a known L(N, D): the fit, the per-class verdicts and
    the compute-optimal table land in fits.json and summary.md."""
    from synscale.analysis.model_size import StepRule
    from synscale.results import analyze_rows
    from synscale.study.schema import AnalysisSection

    rule = StepRule(epochs=10, batch_size=64, min_steps=1, max_steps=10**9)
    rng = np.random.default_rng(3)
    rows = []
    for width, params in ((32, 3e4), (64, 1.2e5), (128, 4.8e5)):
        for ipc in (4, 8, 16, 32, 64, 128):
            images = ipc * 10
            loss = (0.2 + 30 * params ** -0.3 + 8 * images ** -0.4) * np.exp(rng.normal(0, 0.005))
            steps = rule.seen(images) / 64
            rows.append({"eval_set": "digits-test", "source": "real", "arch": "vit",
                         "width": width, "images_per_class": ipc, "images": images,
                         "steps": steps, "parameters": params,
                         "train_flops": 3 * 20 * params * steps * 64, "loss": loss,
                         "top1": 0.5, "per_class_top1": [0.5] * 10,
                         "per_class_loss": [loss] * 10})
    settings = AnalysisSection(bootstrap=50)
    out = analyze_rows(rows, tmp_path, settings, rule, class_names=[f"c{i}" for i in range(10)])
    assert out["fitted"] == 3
    doc = json.loads((tmp_path / "fits.json").read_text())
    assert doc["schema"] == 3 and doc["lead_law"] == "power"
    assert set(doc["series"][0]["fits"]) == {"power", "power+offset", "saturating"}
    # six sizes: each law's check of the largest one, left out
    assert len(doc["holdout"]) == 3 and all(c["size"] == 128 for c in doc["holdout"])
    assert set(doc["holdout"][0]["checks"]) == {"power", "power+offset", "saturating"}
    (size_fit,) = doc["model_size"]
    assert size_fit["params"]["alpha"] == pytest.approx(0.3, abs=0.05)
    assert size_fit["params"]["beta"] == pytest.approx(0.4, abs=0.05)
    assert size_fit["flops_per_sample_law"]["gamma"] == pytest.approx(1.0)
    optimal = size_fit["compute_optimal"]
    assert len(optimal) == 6
    spent = [o["parameters"] for o in optimal if "parameters" in o]
    assert spent == sorted(spent)  # a bigger budget buys a model at least as big
    per_class = doc["per_class"]["series"]
    assert len(per_class) == 3  # one per width
    assert all(sum(p["counts"].values()) == 10 for p in per_class)
    md = (tmp_path / "summary.md").read_text()
    assert "Compute-optimal split" in md and "Classes by how they scale" in md
    assert "How far the law holds" in md
    assert (tmp_path / "plots/per_class.png").stat().st_size > 0
