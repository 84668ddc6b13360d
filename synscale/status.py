"""`python -m synscale.status RUN_DIR [--json]`: where a run stands.

Read from the run directory alone: a stage is done when DONE exists, failed
when its last attempt left error.json, running when the process recorded in
attempt.json is alive on this host, and pending otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from synscale.plan import state
from synscale.plan.graph import KINDS, Plan
from synscale.plan.layout import RunDir

STATES = ("done", "running", "pending", "failed")


def stage_state(folder: Path) -> str:
    if state.is_done(folder):
        return "done"
    if state.attempt_alive(folder):
        return "running"
    if (folder / "error.json").exists():
        return "failed"
    return "pending"


def collect(run: RunDir) -> dict:
    plan = Plan.from_json(run.plan_file.read_text())
    counts = {k: Counter() for k in KINDS}
    failures = []
    for s in plan.stages:
        folder = run.stage(s.kind, s.id)
        st = stage_state(folder)
        counts[s.kind][st] += 1
        if st == "failed":
            err = state.read_json(folder / "error.json")
            failures.append({"kind": s.kind, "id": s.id, "error": err["error"],
                             "log": str(folder / "log.txt")})
    return {"study": plan.study, "run_dir": str(run.root),
            "kinds": {k: {st: c[st] for st in STATES} | {"total": sum(c.values())}
                      for k, c in counts.items() if c},
            "failures": failures}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.status", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    run = RunDir(args.run_dir)
    if not run.plan_file.exists():
        print(f"error: {args.run_dir}: not a run directory (no plan.json); expected "
              "runs/<study> as written by python -m synscale.launch", file=sys.stderr)
        return 2
    info = collect(run)
    if args.json:
        print(json.dumps(info))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{info['study']} ({info['run_dir']})")
    table.add_column("kind")
    for col in (*STATES, "total"):
        table.add_column(col, justify="right")
    for kind, c in info["kinds"].items():
        table.add_row(kind, *(str(c[col]) if c[col] else "" for col in (*STATES, "total")))
    console.print(table)
    for f in info["failures"]:
        console.print(f"[red]failed[/] {f['kind']}/{f['id']}: {f['error']}\n  log: {f['log']}",
                      highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
