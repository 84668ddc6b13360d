"""Fits as runs land (analysis/provisional.py, shown by status): from the
evaluations finished so far, refitted only for the series a new evaluation
belongs to, marked provisional until the series is complete."""
import json

import numpy as np
import pytest

from synscale.analysis import provisional
from synscale.plan import state
from synscale.plan.graph import Plan, Stage
from synscale.plan.layout import RunDir

SIZES = (4, 8, 16, 32, 64)


def _run(tmp_path):
    """A plan of two series (real, synthetic) of five evaluations each."""
    stages = []
    for source in ("real", "synthetic"):
        for ipc in SIZES:
            stages.append(Stage(f"{source}{ipc}", "evaluate", {}, ("t",),
                                {"eval_set": "test", "source": source, "arch": "vit"}))
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    state.write_text(run.plan_file, Plan("p", stages).to_json())
    state.write_text(run.study_file, '[analysis]\nlaw = "power"\n')
    return run


def _finish(run, source, ipc):
    k = {"real": 0.5, "synthetic": 0.3}[source]
    folder = run.stage("evaluate", f"{source}{ipc}")
    state.write_json(folder / "metrics.json", {"images_per_class": ipc,
                                               "loss": 3.0 * ipc ** -k * (1 + 0.01 * (ipc % 3))})
    state.mark_done(folder, {})
    return f"{source}{ipc}"


def test_fits_follow_the_finished_evaluations_and_refit_only_what_changed(tmp_path, monkeypatch):
    run = _run(tmp_path)
    done = [_finish(run, s, ipc) for s in ("real", "synthetic") for ipc in SIZES[:3]]
    view = provisional.refresh(run, done)
    rows = {r["key"]["source"]: r for r in view["series"]}
    assert rows["real"]["points"] == 3 and rows["real"]["planned"] == 5
    assert not rows["real"]["final"] and rows["real"]["k"] == pytest.approx(0.5, abs=0.05)
    assert rows["synthetic"]["k"] == pytest.approx(0.3, abs=0.05)
    (m,) = view["synthetic_per_real"]
    # the real curve's loss at 16 needs more synthetic images: k is smaller
    assert m["real_size"] == 16 and m["multiplier"] > 1

    # nothing new: the cached view, no fit at all
    from synscale.analysis import fit
    monkeypatch.setattr(fit, "fit_series", lambda *a, **k: pytest.fail("refitted"))
    assert provisional.refresh(run, done) == view
    monkeypatch.undo()

    # two more real points: only the real series is refitted
    done += [_finish(run, "real", ipc) for ipc in SIZES[3:]]
    calls = []
    real_fit_series = fit.fit_series
    monkeypatch.setattr(fit, "fit_series", lambda rows, **k: calls.append(len(rows))
                        or real_fit_series(rows, **k))
    view = provisional.refresh(run, done)
    assert calls == [5]
    rows = {r["key"]["source"]: r for r in view["series"]}
    assert rows["real"]["final"] and not rows["synthetic"]["final"]
    lines = (run.results / "provisional/points.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(done)  # each read once
    assert rows["real"]["ci95"][0] < 0.5 < rows["real"]["ci95"][1]
    assert np.isfinite(view["synthetic_per_real"][0]["multiplier"])
