#!/usr/bin/env python
"""Gather a run's evaluations and fit its scaling curves, or fit a CSV of points.

    tools/fit_curves.py RUN_DIR [--bootstrap K] [--json]
    tools/fit_curves.py POINTS.csv --law LAW --x COL --y COL [--n COL]
                        [--group COL ...] [--bootstrap K] [--seed S] [--json]

A run directory gets RUN_DIR/results/{metrics.csv, generation.csv,
fits.json, summary.md, plots/} and the tables in the terminal. A CSV gets
one fit per group: LAW is power (L = A x^-k), power+offset (L = E + A x^-k),
saturating (L = E + A (x + D0)^-k) or chinchilla (L = E + A/N^alpha + B/D^beta, with D the --x column and N the
--n column); --json prints {"fits": [...]} (synscale/analysis/points.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("source", type=Path, help="a run directory (runs/<study>) or a CSV of points")
    p.add_argument("--law", help="CSV: power, power+offset, saturating or chinchilla")
    p.add_argument("--x", help="CSV: the data-size column")
    p.add_argument("--y", help="CSV: the loss column")
    p.add_argument("--n", help="CSV, chinchilla: the model-size column")
    p.add_argument("--group", nargs="+", default=[], metavar="COL",
                   help="CSV: columns whose values split the points into series")
    p.add_argument("--bootstrap", type=int, default=None, metavar="K",
                   help="bootstrap resamples per fit (run: overrides [analysis] bootstrap; "
                        "CSV: default 0)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--json", action="store_true", help="print the fits as JSON")
    return p, p.parse_args(argv)


def _fit_csv(p, args) -> int:
    from synscale.analysis.points import fit_points, read_csv

    missing = [f"--{k}" for k in ("law", "x", "y") if not getattr(args, k)]
    if missing:
        p.error(f"a CSV needs {', '.join(missing)}")
    try:
        rows = read_csv(args.source)
        groups = len({tuple(r[g] for g in args.group) for r in rows}) if args.group else 1
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {args.source}: {e}", file=sys.stderr)
        return 2
    from rich.console import Console

    from synscale.analysis.bootstrap import progress_bar
    try:
        with progress_bar(None if args.json else Console(stderr=True),
                          groups * (args.bootstrap or 0)) as tick:
            fits = fit_points(rows, args.law, args.x, args.y, args.n, args.group,
                              args.bootstrap or 0, args.seed, tick)
    except ValueError as e:
        print(f"error: {args.source}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"fits": fits}, indent=1))
    else:
        from synscale.report.tables import points_table
        Console().print(points_table(fits, str(args.source)))
    return 0


def main(argv=None) -> int:
    p, args = _args(argv)
    if args.source.suffix == ".csv" or args.source.is_file():
        return _fit_csv(p, args)
    if not (args.source / "plan.json").exists():
        print(f"error: {args.source}: not a run directory (no plan.json) nor a .csv of points; "
              "expected runs/<study> as written by python -m synscale.launch", file=sys.stderr)
        return 2
    from rich.console import Console

    from synscale.analysis.results import analyze_run

    analyze_run(args.source, console=None if args.json else Console(),
                bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print((args.source / "results" / "fits.json").read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
