#!/usr/bin/env python
"""Gather a run's evaluations and fit its scaling curves.

    tools/fit_curves.py RUN_DIR [--json]

writes RUN_DIR/results/{metrics.csv, generation.csv, fits.json, summary.md,
plots/scaling.png} and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("run_dir", type=Path, help="a run directory (runs/<study>)")
    p.add_argument("--json", action="store_true", help="print results/fits.json's content")
    args = p.parse_args(argv)
    if not (args.run_dir / "plan.json").exists():
        print(f"error: {args.run_dir}: not a run directory (no plan.json); expected "
              "runs/<study> as written by python -m synscale.launch", file=sys.stderr)
        return 2
    from rich.console import Console

    from synscale.analysis.results import analyze_run

    analyze_run(args.run_dir, console=None if args.json else Console())
    if args.json:
        print((args.run_dir / "results" / "fits.json").read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
