#!/usr/bin/env python
"""Gather a run's evaluations and fit its scaling curves, or fit a CSV of points.

    tools/fit_curves.py RUN_DIR [--bootstrap K] [--json]
    tools/fit_curves.py RUN_DIR --suggest [--budget-gpu-hours H] [--draws R] [--json]
    tools/fit_curves.py POINTS.csv --law LAW --x COL --y COL [--n COL]
                        [--group COL ...] [--bootstrap K] [--seed S] [--json]

A run directory gets RUN_DIR/results/{metrics.csv, generation.csv,
fits.json, summary.md, plots/} and the tables in the terminal. A CSV gets
one fit per group: LAW is power (L = A x^-k), power+offset (L = E + A x^-k),
saturating (L = E + A (x + D0)^-k) or chinchilla (L = E + A/N^alpha + B/D^beta,
with D the --x column and N the --n column); --json prints {"fits": [...]}
(synscale/analysis/points.py).

--suggest ranks additions to a run's study (a size past either end of a
source's sweep, one more seed at a size, a model width) by how much each is
expected to narrow the 95% intervals of the headline quantities (each
series' k, the synthetic-per-real multiplier at the largest real size, the
L(N, D) exponent alpha) per device-hour, and prints the study lines that
make the best ones (those within --budget-gpu-hours, or the best alone).
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
    p.add_argument("--suggest", action="store_true",
                   help="run: rank additions to the study by expected narrowing per GPU-hour")
    p.add_argument("--budget-gpu-hours", type=float, default=None, metavar="H",
                   help="--suggest: device-hours to spend (GPU-hours, or CPU-hours for a "
                        "study without GPUs); the lines to add fill it best first")
    p.add_argument("--draws", type=int, default=None, metavar="R",
                   help="--suggest: simulated measurements per addition (default 16)")
    p.add_argument("--backend", choices=("local", "slurm"), default=None,
                   help="--suggest: the backend the additions would run on (default: the run's)")
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


def _suggest(args) -> int:
    from rich.console import Console

    from synscale.analysis import next_runs, suggest
    from synscale.study.load import StudyError

    if args.budget_gpu_hours is not None and args.budget_gpu_hours <= 0:
        print(f"error: --budget-gpu-hours {args.budget_gpu_hours:g}: must be > 0", file=sys.stderr)
        return 2
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        result = next_runs.suggest_run(args.source, args.budget_gpu_hours,
                                       args.draws or suggest.DRAWS, args.seed, args.backend,
                                       None if args.json else Console(stderr=True))
    except StudyError as e:
        print("error: " + "; ".join(e.problems), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(next_runs.as_json(result), indent=1))
        return 0
    from synscale.report.extra_grids import suggestion_grid
    from synscale.report.grid import print_grid
    if not result["headline"]:
        console.print("No headline interval yet (series need a bootstrap interval: more sizes "
                      "finished); nothing to rank.")
        return 0
    print_grid(console, suggestion_grid(result))
    if result["lines"]:
        console.print("Lines for the study file (" + ", ".join(
            o.candidate.label for o in result["chosen"]) + "):")
        for line in result["lines"]:
            console.print("  " + line, highlight=False, markup=False)
    else:
        console.print("No addition is expected to narrow the intervals"
                      + (" within the budget." if args.budget_gpu_hours else "."))
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

    if args.suggest:
        return _suggest(args)
    from synscale.results import analyze_run
    from synscale.study.load import StudyError
    try:
        analyze_run(args.source, console=None if args.json else Console(),
                    bootstrap=args.bootstrap, seed=args.seed)
    except StudyError as e:
        print("error: " + "\n  ".join(e.problems), file=sys.stderr)
        return 2
    if args.json:
        print((args.source / "results" / "fits.json").read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
