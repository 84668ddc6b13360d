#!/usr/bin/env python
"""What watching and relaunching a large run costs (issue 11).

    tools/bench_monitor.py [--stages 10000 100000] [--dry-run-stages 1000000]
                           [--before REV] [--keep] [--json]

For each size N it writes a study with long sweep axes (embedded digits,
about N stages), plans it, and lays out its run directory as a run that is
95% through: stage folders with attempt.json and DONE, 2% failed, 1% running
(a fresh heartbeat), the rest pending. It then times, each in a fresh
Python process, one status refresh (the first, which builds the done index,
then a steady one, and one of --watch, which keeps its state), marks every
stage done and times a no-op relaunch (`python -m synscale.launch STUDY
--json`, start-up included), twice. Last, the wall time and peak memory of
a dry run of a study of --dry-run-stages stages.

--before REV measures the same things with the code of a git revision
(extracted with git archive into a temporary folder) on the same run
directories, for a side-by-side table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"status": 1.0, "relaunch": 3.0, "dry_run_s": 30.0, "dry_run_gb": 2.0}

# Runs in a fresh process with the code under test (new or --before).
STATUS = """
import json, sys, time
from pathlib import Path
from synscale import status
from synscale.plan.layout import RunDir
run = RunDir(Path(sys.argv[1]))
out = {}
t = time.perf_counter(); info = status.collect(run); out["first"] = time.perf_counter() - t
t = time.perf_counter(); status.collect(run); out["steady"] = time.perf_counter() - t
if hasattr(status, "Memory"):  # --watch keeps its state between refreshes
    memory = status.Memory(run)
    status.collect(run, memory)
    t = time.perf_counter(); status.collect(run, memory); out["watch"] = time.perf_counter() - t
if hasattr(status, "fits_so_far"):  # the fits as evaluations land (the cache's three cases)
    memory = status.Memory(run)
    status.collect(run, memory)
    t = time.perf_counter(); status.fits_so_far(run, memory); out["fits_first"] = time.perf_counter() - t
    t = time.perf_counter(); status.fits_so_far(run, memory); out["fits_steady"] = time.perf_counter() - t
    from synscale.plan import state
    from synscale.plan.graph import Plan
    plan = Plan.from_json(run.plan_file.read_text())
    new = next(e for e in plan.of_kind("evaluate") if not state.is_done(run.stage("evaluate", e.id)))
    folder = run.stage("evaluate", new.id)
    folder.mkdir(parents=True, exist_ok=True)
    state.write_json(folder / "metrics.json", {"images_per_class": new.axes["images_per_class"],
                                               "loss": 2.0 * new.axes["images_per_class"] ** -0.3})
    state.mark_done(folder, {})
    status.collect(run, memory)
    t = time.perf_counter(); status.fits_so_far(run, memory); out["fits_new"] = time.perf_counter() - t
out["counts"] = {k: {s: n for s, n in c.items() if s not in ("arrays", "elapsed_s")}
                 for k, c in info["kinds"].items()}
out["elapsed_done"] = {k: c["elapsed_s"] for k, c in info["kinds"].items()
                       if c["running"] == 0 and c["failed"] == 0}
print(json.dumps(out))
"""


def study_text(stages: int, name: str) -> str:
    """The embedded digits study with long axes: 2 stages (train, evaluate)
    per (guidance, width, size), so about `stages` in all."""
    configs = max(1, round(stages / 200))  # guidance x width, with 100 sizes
    widths = min(100, configs)
    guidance = max(1, math.ceil(configs / widths))
    text = (ROOT / "studies" / "digits_sweep.toml").read_text()
    for key, value in (("name", f'"{name}"'), ("sources", '["synthetic"]'),
                       ("synthetic_images_per_class", str(list(range(4, 104)))),
                       ("guidance", str([round(0.1 * i, 1) for i in range(guidance)])),
                       ("width", str(list(range(8, 8 + 2 * widths, 2))))):
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)  # [study] name
    return re.sub(r"(?m)^real_images_per_class = .*\n", "", text)


def _write(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj))  # no fsync: a benchmark's files, not a run's


def lay_out(root: Path, stages: int) -> tuple[Path, Path, list]:
    """A planned run 95% through; returns (study file, run dir, plan stages)."""
    from synscale.plan import stored
    from synscale.plan.layout import RunDir
    from synscale.study.expand import expand
    from synscale.study.load import load_study

    name = f"bench_{stages}"
    study_file = root / f"{name}.toml"
    study_file.write_text(study_text(stages, name))
    study = load_study(study_file)
    plan = expand(study)
    run = RunDir(root / "runs" / name)
    run.root.mkdir(parents=True)
    run.study_file.write_text(study.text)
    stored.write_plan(run, plan)
    now = time.time()
    n = len(plan.stages)
    for i, s in enumerate(plan.stages):  # in plan order, as a run progresses
        share = i / n
        if share >= 0.98:
            continue  # pending: not started
        folder = run.stage(s.kind, s.id)
        folder.mkdir(parents=True)
        start = now - 3600 + 3000 * share
        _write(folder / "attempt.json", {"pid": 1, "host": "bench", "started": start})
        if share < 0.95:
            if s.kind == "evaluate":  # what the fits as evaluations land read
                ipc = s.axes["images_per_class"]
                _write(folder / "metrics.json", {"images_per_class": ipc,
                                                 "loss": 2.0 * ipc ** -0.3 * (1 + 0.01 * (i % 7))})
            _write(folder / "DONE", {"finished": start + 30, "seconds": 30})
        elif share < 0.97:
            _write(folder / "error.json", {"error": "ValueError: bench", "time": start + 5})
        else:
            (folder / "heartbeat").touch()  # running
    return study_file, run.root, plan.stages


def finish(run_root: Path, stages: list) -> None:
    """Every stage done and the results current: what a relaunch finds with nothing to do."""
    from synscale.plan.layout import RunDir

    run = RunDir(run_root)
    now = time.time()
    for s in stages:
        folder = run.stage(s.kind, s.id)
        if (folder / "DONE").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("error.json", "heartbeat"):
            (folder / name).unlink(missing_ok=True)
        _write(folder / "attempt.json", {"pid": 1, "host": "bench", "started": now - 60})
        _write(folder / "DONE", {"finished": now, "seconds": 60})
    run.results.mkdir(parents=True, exist_ok=True)
    _write(run.results / "fits.json", {})  # what older launches look for
    try:  # what newer ones look for: the digest of the study and the finished evaluations
        from synscale.analysis import inputs
        inputs.record(run, [s.id for s in stages if s.kind == "evaluate"])
    except ImportError:
        pass


def _env(code: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(code)}


def time_status(code: Path, run_root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", STATUS, str(run_root)], cwd=code, env=_env(code),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_relaunch(code: Path, study_file: Path, root: Path) -> dict:
    plan_file = next((root / "runs").glob("*/plan.json"))
    before = plan_file.stat().st_mtime_ns
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "synscale.launch", str(study_file), "--root",
                          str(root / "runs"), "--json"], cwd=code, env=_env(code),
                         capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"relaunch failed ({out.returncode}):\n{out.stderr[-2000:]}")
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    if answer.get("submitted"):
        raise SystemExit(f"the relaunch was not a no-op: {answer}")
    return {"seconds": seconds, "plan_rewritten": plan_file.stat().st_mtime_ns != before}


def time_dry_run(code: Path, study_file: Path, root: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synscale.launch", str(study_file), "--root",
                             str(root / "runs"), "--dry-run", "--json"], cwd=code,
                            env=_env(code), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"dry run failed (wait status {status})")
    return {"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_gb": usage.ru_maxrss / 2**20,  # kilobytes on Linux
            "stages": sum(json.loads(stdout)["stages"].values())}


def checkout(rev: str, into: Path) -> Path:
    """The package as of `rev`, from git (nothing in the work tree changes)."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "synscale"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(args, root: Path) -> dict:
    codes = {"after": ROOT}
    if args.before:
        codes["before"] = checkout(args.before, root / "before")
    result = {"runs": {}, "dry_run": {}}
    for n in args.stages:
        study_file, run_root, stages = lay_out(root, n)
        row = {"stages": len(stages)}
        for label, code in codes.items():  # "after" first: its first refresh builds the index
            row[f"status_{label}"] = time_status(code, run_root)
        finish(run_root, stages)
        for label, code in codes.items():
            first = time_relaunch(code, study_file, root)
            steady = time_relaunch(code, study_file, root)
            row[f"relaunch_{label}"] = {"first": first, "steady": steady}
        result["runs"][n] = row
        shutil.rmtree(run_root)
    if args.dry_run_stages:
        study_file = root / "dry_run.toml"
        study_file.write_text(study_text(args.dry_run_stages, "bench_dry_run"))
        for label, code in codes.items():
            result["dry_run"][label] = time_dry_run(code, study_file, root)
    return result


def show(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    labels = [x for x in ("before", "after")
              if any(f"status_{x}" in r for r in result["runs"].values()) or x in result["dry_run"]]
    table = Table(title="status and relaunch of large runs (seconds; peak memory in GB)")
    table.add_column("measure")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("goal", justify="right")

    def add(name, values, goal=None, fmt="{:.2f}"):
        cells = [fmt.format(v) if v is not None else "" for v in values]
        met = ("" if goal is None or values[-1] is None
               else " ok" if values[-1] < goal else " MISSED")
        table.add_row(name, *cells, (f"< {goal:g}" + met) if goal else "")

    for row in result["runs"].values():
        size = f"{row['stages']:,} stages"
        got = [row.get(f"status_{x}") for x in labels]
        add(f"{size}: status refresh, first (indexes)", [g and g["first"] for g in got])
        add(f"{size}: status refresh, steady", [g and g["steady"] for g in got],
            GOALS["status"] if row["stages"] >= 100000 else None)
        add(f"{size}: status --watch refresh", [g and g.get("watch") for g in got])
        add(f"{size}: fits so far, first (every series)", [g and g.get("fits_first") for g in got])
        add(f"{size}: fits so far, nothing new", [g and g.get("fits_steady") for g in got],
            GOALS["status"] if row["stages"] >= 100000 else None)
        add(f"{size}: fits so far, one new evaluation", [g and g.get("fits_new") for g in got],
            GOALS["status"] if row["stages"] >= 100000 else None)
        got = [row.get(f"relaunch_{x}") for x in labels]
        add(f"{size}: no-op relaunch, first", [g and g["first"]["seconds"] for g in got])
        add(f"{size}: no-op relaunch, steady", [g and g["steady"]["seconds"] for g in got],
            GOALS["relaunch"] if row["stages"] >= 100000 else None)
        table.add_row(f"{size}: relaunch rewrote plan.json",
                      *("yes" if g and g["steady"]["plan_rewritten"] else "no" for g in got), "no")
        if "status_before" in row:
            same = row["status_before"]["counts"] == row["status_after"]["counts"]
            same_elapsed = (row["status_before"]["elapsed_done"]
                            == row["status_after"]["elapsed_done"])
            table.add_row(f"{size}: status counts as before", "", "yes" if same else "NO", "")
            table.add_row(f"{size}: elapsed of finished kinds as before", "",
                          "yes" if same_elapsed else "NO", "")
    dry = [result["dry_run"].get(x) for x in labels]
    if any(dry):
        stages = next(d["stages"] for d in dry if d)
        add(f"{stages:,}-stage dry run, wall", [d and d["seconds"] for d in dry],
            GOALS["dry_run_s"])
        add(f"{stages:,}-stage dry run, CPU", [d and d["cpu_s"] for d in dry])
        add(f"{stages:,}-stage dry run, peak memory", [d and d["peak_gb"] for d in dry],
            GOALS["dry_run_gb"])
    Console().print(table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", type=int, nargs="*", default=[10000, 100000],
                   help="run sizes to lay out and time (default: 10000 100000)")
    p.add_argument("--dry-run-stages", type=int, default=1000000,
                   help="size of the dry-run study; 0 skips it (default: 1000000)")
    p.add_argument("--before", metavar="REV", help="also time the code of this git revision")
    p.add_argument("--keep", action="store_true", help="leave the temporary folder in place")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_monitor_"))
    try:
        result = measure(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
