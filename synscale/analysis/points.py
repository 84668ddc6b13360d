"""Fits of a plain table of points (a CSV a user brings, or a run's
metrics.csv): one fit per group, in the JSON shape `tools/fit_curves.py
--json` prints.

    {"fits": [{"group": {...}, "law": ..., "params": {...}, "se": {...},
               "ci95": {name: [lo, hi]}, "n_points": ...}, ...]}

A group that cannot be fitted carries `error` instead of `params`.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synscale.analysis.fit import LAWS, FitError, _norm, _num, fit_series, sort_key

ALL_LAWS = (*LAWS, "chinchilla")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows under its header")
    return rows


def _check_columns(rows: Sequence[Mapping], wanted: list[tuple[str, str]]) -> None:
    """Every (flag, column) named is a column; each --group is checked (a
    mapping by flag kept only the last)."""
    columns = list(rows[0])
    missing = [f"--{flag} {col}" for flag, col in wanted if col and col not in columns]
    if missing:
        raise ValueError(f"{', '.join(missing)}: not a column; columns: {', '.join(columns)}")


def _entry(group: dict, law: str, n_points: int, fit=None, interval=None, error=None) -> dict:
    if fit is None:
        return {"group": group, "law": law, "n_points": n_points, "error": error}
    out = {"group": group, "law": law, "params": dict(fit.params), "n_points": n_points,
           "rmse": fit.rmse}
    if interval is not None:
        out.update(se=interval.se, ci95={k: list(v) for k, v in interval.ci95.items()},
                   bootstrap={"resamples": interval.resamples, "failed": interval.failed,
                              "seed": interval.seed})
    return out


def fit_points(rows: Sequence[Mapping[str, Any]], law: str, x: str, y: str, n: str | None = None,
               group: Sequence[str] = (), bootstrap: int = 0, seed: int = 0,
               progress: Callable[[], None] | None = None) -> list[dict]:
    if law not in ALL_LAWS:
        raise ValueError(f"--law {law}: unknown; allowed: {', '.join(ALL_LAWS)}")
    if law == "chinchilla" and not n:
        raise ValueError("--law chinchilla fits L(N, D): name the model-size column with --n")
    _check_columns(rows, [("x", x), ("y", y), ("n", n or ""), *(("group", g) for g in group)])
    if law != "chinchilla":
        fits = fit_series(rows, x=x, y=y, axes=list(group), law=law, laws=[law],
                          bootstrap=bootstrap, seed=seed, progress=progress)
        return [_entry(f.key, law, len(f.x), f.fit, f.interval, f.error) for f in fits]
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(tuple(_norm(r[g]) for g in group), []).append(r)
    out = []
    for values in sorted(groups, key=lambda t: sort_key(dict(zip(group, t)))):
        members = groups[values]
        cols = [np.array([_num(r[c]) for r in members]) for c in (n, x, y)]
        entry, _ = fit_chinchilla_group(dict(zip(group, values)), *cols, bootstrap=bootstrap,
                                        seed=seed, progress=progress)
        out.append(entry)
    return out


def fit_chinchilla_group(group: dict, n, d, loss, bootstrap: int = 0, seed: int = 0,
                         progress=None):
    """(the --json entry, the ChinchillaFit or None)."""
    from synscale.analysis.bootstrap import bootstrap as resample
    from synscale.analysis.chinchilla import fit_chinchilla, log_params

    try:
        fit = fit_chinchilla(n, d, loss)
    except FitError as e:
        return _entry(group, "chinchilla", len(n), error=str(e)), None
    interval = None
    if bootstrap:
        start = log_params(fit)
        interval = resample(lambda i: fit_chinchilla(n[i], d[i], loss[i], x0=start).params,
                            len(n), bootstrap, seed, progress)
    entry = _entry(group, "chinchilla", len(n), fit, interval)
    entry.update(objective=fit.objective, n_range=list(fit.n_range), d_range=list(fit.d_range))
    return entry, fit
