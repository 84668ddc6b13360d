"""`python -m synscale.status RUN_DIR [--json] [--watch]`: where a run stands.

Per stage kind: done, running, pending, failed (with its class) and not
submitted, from the run directory and, for a slurm run, one squeue and at
most one sacct call per refresh (backends/failures.py says how).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from synscale.backends.failures import classify
from synscale.plan.graph import KINDS, Plan
from synscale.plan.layout import RunDir

STATES = ("done", "running", "pending", "failed", "not submitted")


def _slurm_view(run: RunDir):
    """(stage -> job, squeue states, sacct states or None) for a slurm run."""
    from synscale.backends import slurm

    records = slurm.load_records(run)
    if not records["stages"]:
        return {}, None, None
    arrays = sorted({a["job_id"] for a in records["arrays"]})
    return records["stages"], slurm.queue_states(), slurm.accounting_states(arrays)


def collect(run: RunDir) -> dict:
    plan = Plan.from_json(run.plan_file.read_text())
    jobs, queue, acct = _slurm_view(run)
    counts = {k: Counter() for k in KINDS}
    failures = []
    for s in plan.stages:
        folder = run.stage(s.kind, s.id)
        job = jobs.get(s.id)
        verdict = classify(folder, job, queue if jobs else None, acct)
        counts[s.kind][verdict.state] += 1
        if verdict.state == "failed":
            failures.append({"kind": s.kind, "id": s.id, "job": job, "class": verdict.klass,
                             "error": verdict.message, "log": str(folder / "log.txt")})
    return {"study": plan.study, "run_dir": str(run.root),
            "kinds": {k: {st: c[st] for st in STATES} | {"total": sum(c.values())}
                      for k, c in counts.items() if c},
            "failures": failures}


def render(info: dict):
    """The status view: a table of stage kinds, then each failure."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{info['study']} ({info['run_dir']})")
    table.add_column("kind")
    for col in (*STATES, "total"):
        table.add_column(col, justify="right")
    for kind, c in info["kinds"].items():
        table.add_row(kind, *(str(c[col]) if c[col] else "" for col in (*STATES, "total")))
    lines = [Text.assemble(("failed ", "red"), f"{f['kind']}/{f['id']}",
                           f" [{f['job']}]" if f.get("job") else "",
                           f" ({f['class']}): {f['error']}\n  log: {f['log']}")
             for f in info["failures"]]
    return Group(table, *lines)


def finished(info: dict) -> bool:
    return all(c["running"] == 0 and c["pending"] == 0 for c in info["kinds"].values())


def watch(run: RunDir, console, interval: float = 5.0) -> dict:
    """Refresh in place until nothing is pending or running."""
    import time

    from rich.live import Live

    info = collect(run)
    with Live(render(info), console=console, refresh_per_second=1) as live:
        while not finished(info):
            time.sleep(interval)
            info = collect(run)
            live.update(render(info))
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.status", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--watch", action="store_true", help="refresh until everything has finished")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    args = p.parse_args(argv)
    run = RunDir(args.run_dir)
    if not run.plan_file.exists():
        print(f"error: {args.run_dir}: not a run directory (no plan.json); expected "
              "runs/<study> as written by python -m synscale.launch", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(collect(run)))
        return 0
    from rich.console import Console

    console = Console()
    if args.watch:
        info = watch(run, console, args.interval)
    else:
        info = collect(run)
        console.print(render(info))
    return 1 if info["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
