"""Fits as runs land: each series' fit of the lead law, with a bootstrap
interval, from the evaluations finished so far, and the synthetic-per-real
multiplier at the largest real size, marked provisional until every
evaluation of the series is done. `status` shows them on every refresh.

What a refresh costs must not grow with the run, so everything is kept
under results/provisional/ and only what changed is redone:
- series.json   evaluation id -> its series keys, and how many points each
                series will have: read from plan.json once per plan;
- points.jsonl  one line per finished evaluation (its loss and size),
                appended as evaluations finish (their metrics.json read once);
- fits.json     per series, its fit and the digest of the points it was
                fitted from; the whole view and the digest of the finished
                evaluations it shows.
A refresh with no new evaluation reads fits.json and stops; one with new
evaluations reads their metrics and refits only the series they belong to.
"""
from __future__ import annotations

import hashlib
import json
import math
import tomllib

from synscale.analysis.fit import DEFAULT_AXES, _norm
from synscale.plan import state
from synscale.plan.layout import RunDir

RESAMPLES = 50  # a provisional interval: enough to see its width, cheap to redo


def _key(axes: dict) -> str:
    return json.dumps([_norm(axes.get(a, "")) for a in DEFAULT_AXES])


def _series_map(run: RunDir, folder) -> dict:
    """{"stamp", "members": {eval id: [series key]}, "planned": {series key: points}}."""
    path = folder / "series.json"
    st = run.plan_file.stat()
    stamp = [st.st_ino, st.st_size, st.st_mtime_ns]
    if path.exists():
        cached = state.read_json(path)
        if cached.get("stamp") == stamp:
            return cached
    from synscale.plan.graph import Plan
    plan = Plan.from_json(run.plan_file.read_text())
    members, planned = {}, {}
    for s in plan.of_kind("evaluate"):
        keys = [_key(a) for a in (s.axes, *s.also)]
        members[s.id] = keys
        for k in keys:
            planned[k] = planned.get(k, 0) + 1
    out = {"stamp": stamp, "members": members, "planned": planned}
    state.write_json(path, out)
    return out


def _points(run: RunDir, folder, done: list[str], members: dict) -> dict[str, dict]:
    """eval id -> {"x", "y"}: the points file, plus the newly finished ones."""
    path = folder / "points.jsonl"
    points = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                p = json.loads(line)
            except ValueError:  # a torn last line (killed mid-append): read again below
                continue
            points[p["id"]] = p
    new = []
    for sid in done:
        if sid in points or sid not in members:
            continue
        try:
            m = state.read_json(run.stage("evaluate", sid) / "metrics.json")
        except (OSError, ValueError):
            continue
        points[sid] = {"id": sid, "x": m["images_per_class"], "y": m["loss"]}
        new.append(points[sid])
    if new:
        with open(path, "a") as f:
            f.write("".join(json.dumps(p) + "\n" for p in new))
    return points


def _law(run: RunDir) -> str:
    try:
        return tomllib.loads(run.study_file.read_text()).get("analysis", {}).get("law", "power")
    except (OSError, tomllib.TOMLDecodeError):
        return "power"


def refresh(run: RunDir, done_evaluations: list[str]) -> dict:
    """The provisional view for these finished evaluations (cached)."""
    from synscale.analysis import inputs

    folder = run.results / "provisional"
    folder.mkdir(parents=True, exist_ok=True)
    digest = inputs.digest(run, done_evaluations)
    view_path = folder / "fits.json"
    cached = state.read_json(view_path) if view_path.exists() else {}
    if cached.get("digest") == digest:
        return cached["view"]
    series = _series_map(run, folder)
    points = _points(run, folder, done_evaluations, series["members"])
    by_series: dict[str, list] = {}
    for sid, p in points.items():
        for k in series["members"].get(sid, []):
            by_series.setdefault(k, []).append((float(p["x"]), float(p["y"])))
    law = _law(run)
    old = cached.get("series", {})
    fits = {}
    for k, pts in by_series.items():
        pts.sort()
        h = hashlib.sha256(json.dumps([law, pts]).encode()).hexdigest()[:16]
        fits[k] = old[k] if k in old and old[k]["points_digest"] == h else \
            {"points_digest": h, **_fit(pts, law)}
        fits[k].update(points=len(pts), planned=series["planned"].get(k, len(pts)))
    view = _view(fits, law)
    state.write_json(view_path, {"digest": digest, "series": fits, "view": view})
    return view


def _fit(pts: list, law: str) -> dict:
    from synscale.analysis.fit import fit_series
    rows = [{"images_per_class": x, "loss": y} for x, y in pts]
    (f,) = fit_series(rows, axes=[], law=law, laws=[law], bootstrap=RESAMPLES)
    if f.fit is None:
        return {"error": f.error}
    out = {"fit": f.fit.to_dict()}
    if f.interval is not None:
        out["ci95"] = {k: list(v) for k, v in f.interval.ci95.items()}
    return out


def _view(fits: dict, law: str) -> dict:
    """What status shows: per series its k with interval and whether it is
    final, and the synthetic-per-real multiplier at the largest real size."""
    from dataclasses import replace

    from synscale.analysis.fit import LawFit, PowerFit, SeriesFit, synthetic_equivalence

    rows, series_fits = [], []
    for k, f in sorted(fits.items()):
        key = dict(zip(DEFAULT_AXES, json.loads(k)))
        row = {"key": _shown(key), "points": f["points"],
               "planned": f["planned"], "final": f["points"] >= f["planned"]}
        if "fit" in f:
            d = f["fit"]
            row.update(k=d["params"]["k"], ci95=f.get("ci95", {}).get("k"))
            fit = PowerFit(d["law"], d["params"], tuple(d["residuals"]), d["rmse"],
                           d["n_points"], d["x_min"], d["x_max"])
            series_fits.append(SeriesFit(key, (), (), {law: LawFit(law, fit)}, law))
        else:
            row["error"] = f["error"]
        rows.append(row)
    # at the largest real size each real series measured
    largest = [replace(f, x=(f.fit.x_max,)) for f in series_fits]
    multipliers = [{"real": _shown(e.real), "synthetic": _shown(e.synthetic),
                    "real_size": e.real_size, "extrapolated": e.extrapolated,
                    "multiplier": e.multiplier if math.isfinite(e.multiplier) else None}
                   for e in synthetic_equivalence(largest)]
    return {"law": law, "series": rows, "synthetic_per_real": multipliers}


def _shown(key: dict) -> dict:
    return {a: v for a, v in key.items() if v is not None}
