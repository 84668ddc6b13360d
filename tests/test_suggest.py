"""Where to measure next (analysis/suggest.py, plan/additions.py,
tools/fit_curves.py --suggest): the ranking by simulated narrowing, checked
against what adding the point really does; a run's candidates as study
edits with their cost; repeats at a size as a study key."""
import json
import math

import numpy as np
import pytest

from conftest import SMALL_STUDY, run_tool
from synscale.analysis import suggest
from synscale.analysis.fit import fit_law
from synscale.plan import state
from synscale.plan.layout import RunDir

SIZES = np.array([4.0, 8, 16, 32, 64])
KEY = ("series", "s")


def _candidates(hours=1.0):
    return [suggest.Candidate(f"size {s:g}", {KEY: [s]}, hours) for s in (2.0, 24.0, 128.0)] + \
        [suggest.Candidate(f"repeat {s:g}", {KEY: [s]}, hours) for s in SIZES]


def test_top_suggestion_narrows_more_than_a_random_one_of_the_same_cost():
    """On L = 2 x^-0.3 with 5% log noise: over repeated data sets, the point the
    ranking puts first narrows k's interval (measured from the true law, not
    the fit) more often and more on average than a random other candidate."""
    rng = np.random.default_rng(7)

    def measure(x):
        return 2.0 * np.asarray(x, float) ** -0.3 * np.exp(rng.normal(0, 0.05, np.size(x)))

    trials, wins, top_w, other_w = 80, 0, [], []
    for _ in range(trials):
        y = measure(SIZES)
        unit = suggest.series_unit(KEY, SIZES, y, "power", fit_law(SIZES, y, "power").params)
        k = suggest.exponent("k", KEY)
        cands = _candidates()
        _, ranked = suggest.rank({KEY: unit}, [k], cands, n_draws=8)
        top = ranked[0].candidate
        other = [c for c in cands if c is not top][rng.integers(len(cands) - 1)]

        def realized(c, unit=unit, y=y, k=k):
            x = np.concatenate([SIZES, c.adds[KEY]])
            y = np.concatenate([y, measure(c.adds[KEY])])
            return k.width(suggest.draws(unit, x[:, None], y, 0))
        a, b = realized(top), realized(other)
        wins += a < b
        top_w.append(a)
        other_w.append(b)
    from scipy.stats import binomtest
    assert wins / trials > 0.6 and binomtest(wins, trials, 0.5).pvalue < 0.01, wins
    assert np.mean(top_w) < 0.9 * np.mean(other_w)


def test_cost_divides_the_ranking_and_interval_widths_are_the_bootstraps():
    y = 2.0 * SIZES ** -0.3 * np.exp(np.random.default_rng(0).normal(0, 0.05, SIZES.size))
    unit = suggest.series_unit(KEY, SIZES, y, "power", fit_law(SIZES, y, "power").params)
    k = suggest.exponent("k", KEY)
    now, ranked = suggest.rank({KEY: unit}, [k], _candidates(), n_draws=8)
    best = ranked[0].candidate.label
    # the vectorized bootstrap gives the generic one's interval (same resamples)
    generic = suggest.Unit(KEY, SIZES[:, None], y, unit.predict, unit.refit, 2)
    assert k.width(suggest.draws(generic, SIZES[:, None], y, 0)) == pytest.approx(now["k"])
    # the same candidates, the best ten times dearer: it is no longer first
    dear = [suggest.Candidate(c.label, c.adds, 10.0 if c.label == best else 1.0)
            for c in _candidates()]
    _, again = suggest.rank({KEY: unit}, [k], dear, n_draws=8)
    assert again[0].candidate.label != best
    assert next(o for o in again if o.candidate.label == best).mean == \
        pytest.approx(ranked[0].mean)


@pytest.mark.parametrize("law,truth", [("power+offset", lambda x: 0.3 + 2 * x ** -0.5),
                                       ("saturating", lambda x: 0.3 + 2 * (x + 6) ** -0.6)])
def test_batched_offset_refits_agree_with_one_at_a_time(law, truth):
    """batch_fit.offset (all resamples in lockstep) against fit.refit on the
    same resamples: the same draws, to the optimizers' tolerance (measured:
    k of 194 of 194 resamples within 1e-4 for power+offset, 155 of 162 for
    saturating; the interval of k within 0.01%)."""
    x = np.array([4, 8, 16, 32, 64, 128, 256, 512.0])
    y = truth(x) * np.exp(np.random.default_rng(0).normal(0, 0.02, x.size))
    unit = suggest.series_unit(KEY, x, y, law, fit_law(x, y, law).params)
    one_by_one = suggest.Unit(KEY, x[:, None], y, unit.predict, unit.refit, unit.parameters)
    a, b = (suggest.draws(u, x[:, None], y, 0) for u in (unit, one_by_one))
    assert a["k"].size == b["k"].size > 150
    for name in ("k", "E", "A"):  # a few ill-determined resamples may stop elsewhere
        close = np.isclose(np.sort(a[name]), np.sort(b[name]), rtol=1e-4, atol=1e-6)
        assert close.mean() > 0.9, (name, close.mean())
    k = suggest.exponent("k", KEY)
    assert k.width(a) == pytest.approx(k.width(b), rel=0.02)


def test_a_multiplier_narrows_most_where_the_synthetic_curve_is_extended():
    """x64: synthetic images matching the real loss at 64 per class. A point
    past the synthetic sizes narrows its interval; one inside them, less."""
    gains = {"syn 128": [], "syn 32": [], "real 2": []}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        units = {}
        for name, k in (("real", 0.5), ("syn", 0.3)):
            y = 3.0 * SIZES ** -k * np.exp(rng.normal(0, 0.03, SIZES.size))
            units[name] = suggest.series_unit(name, SIZES, y, "power",
                                              fit_law(SIZES, y, "power").params)
        m = suggest.multiplier("x64", "real", "syn", 64.0)
        cands = [suggest.Candidate(label, {label.split()[0]: [float(label.split()[1])]}, 1.0)
                 for label in gains]
        now, ranked = suggest.rank(units, [m], cands)
        assert now["x64"] > 0
        for o in ranked:
            gains[o.candidate.label].append(o.narrowing["x64"])
    assert np.mean(gains["syn 128"]) > max(0.05, np.mean(gains["syn 32"]))


def test_batched_chinchilla_refits_agree_with_one_at_a_time():
    """batch_fit.chinchilla (per-problem L-BFGS in lockstep) against
    fit_chinchilla from the same start on the same resamples: alpha and beta
    of nearly every resample agree, and so do their intervals."""
    from synscale.analysis.chinchilla import fit_chinchilla
    rng = np.random.default_rng(1)
    ns, ds = [2e4, 8e4, 3e5], 10.0 * np.array([4, 8, 16, 32, 64, 128, 256, 512])
    n, d = np.repeat(ns, len(ds)), np.tile(ds, len(ns))
    loss = (0.2 + 40 * n ** -0.3 + 30 * d ** -0.5) * np.exp(rng.normal(0, 0.05, n.size))
    key = ("group", "g")
    unit = suggest.group_unit(key, n, d, loss, fit_chinchilla(n, d, loss), resamples=60)
    one_by_one = suggest.Unit(key, unit.coords, loss, unit.predict, unit.refit, 5, resamples=60)
    a, b = (suggest.draws(u, unit.coords, loss, 0) for u in (unit, one_by_one))
    assert a["alpha"].size == b["alpha"].size > 50
    for name in ("alpha", "beta", "A", "B"):
        close = np.isclose(a[name], b[name], rtol=1e-3, atol=1e-4)
        assert close.mean() > 0.95, (name, close.mean())
    alpha = suggest.exponent("alpha", key, "alpha")
    assert alpha.width(a) == pytest.approx(alpha.width(b), rel=0.02)


def test_a_new_model_width_narrows_the_model_size_exponent():
    """L(N, D) over three widths: a fourth width (all sizes) narrows alpha's
    interval; repeating a point or a larger D for the same models does not."""
    from synscale.analysis.chinchilla import fit_chinchilla
    rng = np.random.default_rng(0)
    ns, ds = [2e4, 6e4, 2e5], [40.0, 80, 160, 320, 640]
    n, d = np.repeat(ns, len(ds)), np.tile(ds, len(ns))
    loss = (0.1 + 30 * n ** -0.4 + 5 * d ** -0.35) * np.exp(rng.normal(0, 0.02, n.size))
    key = ("group", "g")
    unit = suggest.group_unit(key, n, d, loss, fit_chinchilla(n, d, loss))
    alpha = suggest.exponent("alpha", key, "alpha")
    cands = [suggest.Candidate("width", {key: [(6e5, x) for x in ds]}, 1.0),
             suggest.Candidate("repeat", {key: [(6e4, 160.0)] * 3}, 1.0),
             suggest.Candidate("size", {key: [(x, 1280.0) for x in ns]}, 1.0)]
    now, ranked = suggest.rank({key: unit}, [alpha], cands, n_draws=4)
    assert now["alpha"] > 0
    assert ranked[0].candidate.label == "width" and ranked[0].narrowing["alpha"] > 0.05


# ---- a run: candidates are study edits, costed from the plan they make ----

STUDY = SMALL_STUDY.format(name="sugg", workers=1).replace(
    "real_images_per_class = [4, 8, 16]", "real_images_per_class = [8, 16, 32, 64, 128]").replace(
    "synthetic_images_per_class = [4, 8, 16]", "synthetic_images_per_class = [4, 8, 16, 32, 64]")


def _finished_run(tmp_path, text=STUDY) -> RunDir:
    """A run of the study whose evaluations are all done, with losses from
    known laws and noise (no stage ran: what --suggest reads is the plan and
    these). Loss = 3 n^-k (k: real 0.5, synthetic 0.3) + 20 N^-0.4."""
    from synscale.plan import footprint
    from synscale.study.expand import expand
    from synscale.study.load import load_study
    path = tmp_path / "sugg.toml"
    path.write_text(text)
    study = load_study(path)
    plan = expand(study)
    run = RunDir(tmp_path / "runs" / "sugg")
    run.root.mkdir(parents=True)
    state.write_text(run.study_file, text)
    state.write_text(run.plan_file, plan.to_json())
    rng = np.random.default_rng(1)
    for s in plan.of_kind("evaluate"):
        n = s.axes["images_per_class"]
        k = 0.5 if s.axes["source"] == "real" else 0.3
        t = plan.by_id[s.inputs[0]].spec
        params = footprint.model_size(t["model"], 10, footprint.image_shape(study)).params
        state.write_json(run.stage("train", s.inputs[0]) / "manifest.json",
                         {"num_classes": 10, "parameters": params, "train_flops": 1e9})
        folder = run.stage("evaluate", s.id)
        state.write_json(folder / "metrics.json", {
            "images_per_class": n, "images": 10 * n, "steps": 20, "top1": 0.5,
            "loss": (3.0 * n ** -k + 20 * params ** -0.4) * math.exp(rng.normal(0, 0.03)),
            "per_class_top1": [0.5] * 10})
        state.mark_done(folder, {})
    return run


def test_suggest_on_a_run_ranks_study_edits_and_prints_their_lines(tmp_path):
    run = _finished_run(tmp_path)
    r = run_tool("fit_curves.py", run.root, "--suggest", "--json", "--draws", "6")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["unit"] == "cpu" and out["backend"] == "local" and not out["calibrated"]
    # headline: k of both series and the multiplier at the largest real size
    assert len(out["headline"]) == 3 and any(h.startswith("x128") for h in out["headline"])
    labels = [c["label"] for c in out["candidates"]]
    assert {"real size 4", "synthetic size 128", "synthetic size 2",
            "one more seed at size 16", "width 32", "width 8"} <= set(labels)
    # the digits pool cannot hold 256 real images per class: refused, with the loader's reason
    (refused,) = [x for x in out["refused"] if x["label"] == "real size 256"]
    assert "digits pool" in refused["error"]
    per_hour = [c["per_hour"] for c in out["candidates"] if c["per_hour"] is not None]
    assert per_hour == sorted(per_hour, reverse=True) and per_hour[0] > 0
    # a repeat at a size trains once more per source there, and narrows both k's
    seed16 = next(c for c in out["candidates"] if c["label"] == "one more seed at size 16")
    assert seed16["trainings"] == 2 and seed16["hours"] > 0
    assert len([q for q in seed16["narrowing"] if q.startswith("k")]) == 2
    # a larger synthetic size adds its own training, redoing nothing of the run (ids hash
    # content; tests/test_cost.py prices its images)
    big = next(c for c in out["candidates"] if c["label"] == "synthetic size 128")
    assert "redoes" not in big["note"] and big["trainings"] == 1
    # a width adds new series only: nothing of the headline narrows
    assert next(c for c in out["candidates"] if c["label"] == "width 32")["mean"] == 0
    (chosen,) = [c for c in out["candidates"] if c["chosen"]]
    assert chosen["label"] == out["candidates"][0]["label"] and len(out["lines"]) == 1

    # a budget: the picks fit it, best per hour first, their lines merged per key
    cheapest = min(c["hours"] for c in out["candidates"])
    budget = 4.5 * cheapest
    r = run_tool("fit_curves.py", run.root, "--suggest", "--json", "--draws", "6",
                 "--budget-gpu-hours", budget)
    out = json.loads(r.stdout)
    chosen = [c for c in out["candidates"] if c["chosen"]]
    assert 1 <= len(chosen) and sum(c["hours"] for c in chosen) <= budget
    assert len(out["lines"]) == len({line.split(" = ")[0] for line in out["lines"]})

    # the table, and lines a user can paste that the loader accepts
    r = run_tool("fit_curves.py", run.root, "--suggest", "--draws", "4")
    assert r.returncode == 0 and "Where to measure next" in r.stdout, r.stderr[-2000:]
    assert "Lines for the study file" in r.stdout and "[sweep]" in r.stdout
    assert "real size 256: not possible" in r.stdout


def test_pasted_lines_make_a_study_the_loader_takes(tmp_path):
    import tomllib

    from synscale.plan import additions
    from synscale.study.load import load_study, study_from_tables
    path = tmp_path / "sugg.toml"
    path.write_text(STUDY)
    study = load_study(path)
    edits = {e.label: e for e in additions.edits(study)}
    chosen = [edits["one more seed at size 16"], edits["one more seed at size 16"],
              edits["synthetic size 128"], edits["synthetic size 2"]]
    lines = additions.lines(study, chosen)
    assert lines == ['[sweep] repeats = {"16" = 3}',
                     "[sweep] synthetic_images_per_class = [2, 4, 8, 16, 32, 64, 128]"]
    raw = tomllib.loads(STUDY)
    for line in lines:
        table, rest = line[1:].split("] ", 1)
        raw[table].update(tomllib.loads(rest))
    edited = study_from_tables(raw, str(path))
    assert edited.sweep.repeats == {"16": 3}
    assert edited.sweep.synthetic_images_per_class == (2, 4, 8, 16, 32, 64, 128)


def test_repeats_train_again_with_new_seeds_and_leave_done_work_in_place(tmp_path):
    from synscale.study.expand import expand, repeat_seed
    from synscale.study.load import StudyError, load_study
    path = tmp_path / "sugg.toml"
    path.write_text(STUDY)
    before = expand(load_study(path))
    path.write_text(STUDY.replace("[generate]", "repeats = {16 = 3}\n\n[generate]"))
    after = expand(load_study(path))
    assert {s.id for s in before.stages} < {s.id for s in after.stages}
    at16 = [s for s in after.of_kind("train") if s.spec["images_per_class"] == 16]
    assert len(at16) == 6 and len({s.id for s in at16}) == 6
    assert sorted({s.spec["seed"] for s in at16}) == sorted({0, repeat_seed(0, 1),
                                                              repeat_seed(0, 2)})
    # repeats share the series' axes: the fit sees repeated points of one series
    assert len({json.dumps(s.axes, sort_keys=True) for s in at16}) == 2

    path.write_text(STUDY.replace("[generate]", "repeats = {12 = 2, 8 = 0}\n\n[generate]"))
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert any("sweep.repeats.12: not a training size" in p and "4, 8, 16, 32, 64, 128" in p
               for p in e.value.problems)
    assert any("sweep.repeats.8 = 0: expected a whole number >= 1" in p for p in e.value.problems)


def test_a_width_candidate_adds_points_to_the_model_size_law(tmp_path):
    """Three widths: L(N, D) is a headline (alpha); a fourth width measures
    new (parameters, images) points of it and no point of an existing series."""
    from synscale.analysis import next_runs
    from synscale.analysis.gather import gather
    from synscale.plan import additions, footprint
    from synscale.study.expand import expand
    from synscale.study.load import load_study
    run = _finished_run(tmp_path, STUDY.replace("width = [16]", "width = [8, 16, 32]"))
    units, quantities, _ = next_runs.headline(gather(run.root), "power")
    groups = [k for k in units if k[0] == "group"]
    assert len(groups) == 2 and sum(q.label.startswith("alpha") for q in quantities) == 2
    # labelled by what tells the groups apart, as the series are
    assert {q.label for q in quantities if q.label.startswith("alpha")} == \
        {"alpha  real", "alpha  synthetic"}
    study = load_study(run.study_file)
    (width,) = [e for e in additions.edits(study) if e.label == "width 64"]
    planned = expand(study)
    (added,) = additions.expand_all(study, planned, [width], "local", {})
    adds = next_runs._points(added, next_runs._measured(planned, units, study), units, study)
    assert set(adds) == set(groups)
    model = {**next(s for s in added.new if s.kind == "train").spec["model"]}
    assert model["width"] == 64
    params = footprint.model_size(model, 10, footprint.image_shape(study)).params
    real = next(g for g in groups if "real" in g[1])
    assert sorted(adds[real]) == [(params, 10 * n) for n in (8, 16, 32, 64, 128)]
