"""`python -m synscale.status RUN_DIR [--json] [--watch]`: where a run stands.

Per stage kind: done, running, pending, blocked (behind a failed input),
failed (with its class) and not submitted, from the run directory and, for a slurm run, one squeue and at
most one sacct call per refresh (backends/failures.py says how).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from synscale.backends.failures import STATES, Verdict, classify
from synscale.plan import state, stored
from synscale.plan.graph import KINDS
from synscale.plan.index import DoneIndex, summarize
from synscale.plan.layout import RunDir

TAIL_LINES = 5


def _slurm_view(run: RunDir, memory: Memory):
    """(stage -> job, squeue states, sacct states or None, kind -> array ids,
    None or why Slurm did not answer) for a slurm run; squeue's None where
    nothing was ever submitted (a local run, or a Slurm launch that failed
    first). A controller that does not answer leaves the last refresh's
    queue (--watch), or none: the stages' folders alone then say how they are."""
    from synscale.backends import slurm

    if not slurm.records_path(run).exists():
        return {}, None, None, {}, None, {}
    try:
        live = slurm.queue_states()
    except slurm.SlurmError as e:
        stale = {"error": str(e), "queue_as_of": memory.queue_at}
        live = memory.queue
    else:
        memory.queue, memory.queue_at, stale = live, time.time(), None
    # what a launch killed mid-submission left, as the relaunch will adopt it
    recs = slurm.load_records(run, live)
    arrays = defaultdict(list)
    for a in recs["arrays"]:
        arrays[a["kind"]].append(a["job_id"])
    ids = sorted({a["job_id"] for a in recs["arrays"]})
    acct = slurm.accounting_states(ids) if stale is None else None
    return recs["stages"], live, acct, arrays, stale, recs["blocked"]


def _span(folder: Path, verdict: str, now: float) -> tuple[float, float] | None:
    """(start, end) of a running or failed stage's latest attempt: end is now
    while it runs. A done stage's span is in its index entry."""
    attempt = folder / "attempt.json"
    if verdict not in ("running", "failed") or not attempt.exists():
        return None
    start = state.read_json(attempt)["started"]
    if verdict == "running":
        return start, now
    beat = folder / "heartbeat"  # failed: its last beat is about when it stopped
    return (start, beat.stat().st_mtime) if beat.exists() else None


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    if not path.exists():
        return []
    with path.open("rb") as f:  # logs can be large: read the end only
        f.seek(max(0, path.stat().st_size - 16384))
        return f.read().decode(errors="replace").splitlines()[-lines:]


class Memory:
    """What status keeps between refreshes (--watch): the stage list, read
    again only when a launch rewrites it, and the done index, read on from
    where the last refresh stopped."""

    def __init__(self, run: RunDir):
        self.stages: stored.StageList | None = None
        self.index = DoneIndex(run.done_index)
        self.evaluations_done: list[str] = []  # by the last refresh
        self.queue: dict | None = None  # squeue's answer at the last refresh that got one
        self.queue_at: float | None = None


def collect(run: RunDir, memory: Memory | None = None) -> dict:
    """Where the run stands. Stages in the done index are counted from it;
    only the others' folders are read, and those found done are indexed, so
    a refresh reads what can still change, not every finished stage."""
    from synscale.backends.slurm import job_log

    memory = memory or Memory(run)
    memory.stages = plan = stored.load_stages(run, memory.stages)
    indexed = memory.index.read()
    jobs, queue, acct, arrays, stale, dropped = _slurm_view(run, memory)
    counts = {k: Counter() for k in KINDS}
    spans = defaultdict(list)
    now = time.time()
    failures, requeued, newly, evaluated = [], [], {}, []
    for sid, kind in zip(plan.ids, plan.kinds):
        entry = indexed.get(sid)
        if entry is not None:
            counts[kind]["done"] += 1
            if kind == "evaluate":
                evaluated.append(sid)
            if entry.started is not None:
                spans[kind].append((entry.started, entry.finished))
            continue
        folder = run.stage(kind, sid)
        job = jobs.get(sid)
        log = job_log(run, job) if job else None
        verdict = classify(folder, job, queue, acct, log)
        if verdict.state == "failed" and job and dropped.get(sid) == job:
            # a relaunch cancelled it because an input failed and is not retried
            verdict = Verdict("blocked", message="an input failed and is not retried; "
                                                 "its job was cancelled")
        counts[kind][verdict.state] += 1
        if verdict.state == "done":  # seen done for the first time: index it
            if kind == "evaluate":
                evaluated.append(sid)
            entry = summarize(folder, kind)
            if entry is not None:
                newly[sid] = entry
            span = (entry.started, entry.finished) if entry and entry.started is not None else None
        else:
            span = _span(folder, verdict.state, now)
        if span:
            spans[kind].append(span)
        if verdict.note:  # requeued by Slurm or at USR2: still live, but say so
            requeued.append({"kind": kind, "id": sid, "job": job, "state": verdict.state,
                             "note": verdict.note})
        if verdict.state == "failed":
            # The job's Slurm output holds the traceback and Slurm's own
            # words; the stage log, where there is no job, its progress.
            shown = log if log is not None and log.exists() else folder / "log.txt"
            shown = shown if shown.exists() else None  # a task cancelled before it started
            failures.append({"kind": kind, "id": sid, "job": job, "class": verdict.klass,
                             "error": verdict.message, "log": str(shown) if shown else None,
                             "tail": _tail(shown) if shown else []})
    try:
        memory.index.add(newly)
    except OSError:
        pass  # a run directory we may not write to: the next refresh reads them again
    memory.evaluations_done = evaluated
    return {"study": plan.study, "run_dir": str(run.root),
            "kinds": {k: {st: c[st] for st in STATES} | {
                          "total": sum(c.values()), "arrays": arrays.get(k, []),
                          # wall time from the first start to the last finish (or now)
                          "elapsed_s": round(max(e for _, e in spans[k]) -
                                             min(b for b, _ in spans[k]), 1) if spans[k] else None}
                      for k, c in counts.items() if c},
            "failures": failures, "requeued": requeued,
            **({"slurm_unreachable": stale} if stale else {})}


def fits_so_far(run: RunDir, memory: Memory) -> dict | None:
    """Each series' fit from the evaluations finished so far (cached:
    analysis/provisional.py); None before the first or where results/ cannot
    be written."""
    if not memory.evaluations_done:
        return None
    from synscale.analysis import provisional
    try:
        return provisional.refresh(run, memory.evaluations_done)
    except OSError:
        return None


def refresh(run: RunDir, memory: Memory) -> dict:
    """One refresh of the view: the stages' states, then the fits so far."""
    info = collect(run, memory)
    info["fits"] = fits_so_far(run, memory)
    return info


def _fits_table(fits: dict):
    from rich import box
    from rich.table import Table

    from synscale.report.grid import series_labels, shared_label
    rows = fits["series"]
    keys = [r["key"] for r in rows]
    labels = dict(zip((json.dumps(k, sort_keys=True) for k in keys), series_labels(keys)))
    shared = shared_label(keys)
    table = Table(title=f"fits so far ({fits['law']} law, from the finished evaluations"
                        + (f"; {shared}" if shared else "") + ")",
                  box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    for col in ("series", "points", "k (95%)", ""):
        table.add_column(col, justify="left" if col == "series" else "right",
                         no_wrap=col != "series")
    for r in rows:
        if "k" in r:
            k = f"{r['k']:.3f}" + (f" ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})" if r["ci95"] else "")
        else:
            k = "no fit yet"
        table.add_row(labels[json.dumps(r["key"], sort_keys=True)], f"{r['points']}/{r['planned']}",
                      k, "final" if r["final"] else "so far")
    final = {json.dumps(r["key"], sort_keys=True) for r in rows if r["final"]}
    for m in fits["synthetic_per_real"]:
        done = all(json.dumps(m[s], sort_keys=True) in final for s in ("real", "synthetic"))
        label = labels.get(json.dumps(m["synthetic"], sort_keys=True), "synthetic")
        value = f"{m['multiplier']:.2f}x" if m["multiplier"] is not None else "-"
        table.add_row(f"synthetic per real at {m['real_size']:g}: {label}", "",
                      value + ("*" if m["extrapolated"] else ""), "final" if done else "so far")
    return table


def render(info: dict):
    """The status view: a table of stage kinds, the fits so far, then each failure."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # Only the states some kind is in, no vertical rules, and the job ids on
    # lines of their own: the table reads whole in an 80-column terminal
    # (a real study: six kinds, five states, eight-digit ids, weeks elapsed).
    kinds = info["kinds"].values()
    states = [st for st in STATES if any(c[st] for c in kinds)]
    table = Table(title=f"{info['study']} ({info['run_dir']})", box=box.SIMPLE_HEAD,
                  padding=0, show_edge=False)
    table.add_column("kind", no_wrap=True)
    for col in (*states, "total", "elapsed"):
        table.add_column(col.replace(" ", "\n"), justify="right", no_wrap=True)
    for kind, c in info["kinds"].items():
        table.add_row(kind, *(str(c[col]) if c[col] else "" for col in (*states, "total")),
                      _duration(c["elapsed_s"]))
    arrays = [Text(f"{kind} arrays: {_arrays(c['arrays'])}", "dim")
              for kind, c in info["kinds"].items() if c["arrays"]]
    lines = [Text.assemble(("failed ", "red"), f"{f['kind']}/{f['id']}",
                           f" [{f['job']}]" if f.get("job") else "",
                           f" ({f['class']}): {f['error']}\n  log: "
                           f"{f['log'] or 'none (it never started)'}",
                           *((f"\n  | {line}", "dim") for line in f["tail"]))
             for f in info["failures"]]
    requeued = info.get("requeued", [])
    lines += [Text(f"{r['state']} {r['kind']}/{r['id']} [{r['job']}]: {r['note']}", "yellow")
              for r in requeued[:TAIL_LINES * 4]]
    if len(requeued) > TAIL_LINES * 4:
        lines.append(Text(f"... and {len(requeued) - TAIL_LINES * 4} more requeued stages"))
    if any(c["blocked"] for c in info["kinds"].values()):
        lines.append(Text("blocked: waiting on an input that failed or was cancelled; it will "
                          "never run. Launch again to resubmit the input and what reads it.",
                          "yellow"))
    stale = info.get("slurm_unreachable")
    if stale:
        when = (f"as squeue said at {time.strftime('%H:%M:%S', time.localtime(stale['queue_as_of']))}"
                if stale["queue_as_of"] else "from the run directory alone")
        lines.insert(0, Text(f"Slurm does not answer ({stale['error']}): states are {when}, "
                             "and may be stale; retrying", "bold red"))
    fits = [_fits_table(info["fits"])] if info.get("fits") else []
    return Group(table, *arrays, *fits, *lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:  # runs last weeks: days and hours, seconds no longer matter
        return f"{days}d {hours:02d}:{minutes:02d}"
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def _arrays(ids: list[str], shown: int = 4) -> str:
    """Array job ids, the newest last; a retry adds arrays, so cut long lists."""
    if len(ids) <= shown:
        return " ".join(ids)
    return f"{' '.join(ids[:shown - 1])} … {ids[-1]} ({len(ids)})"


def finished(info: dict) -> bool:
    return all(c["running"] == 0 and c["pending"] == 0 for c in info["kinds"].values())


def watch(run: RunDir, console, interval: float = 5.0) -> dict:
    """Refresh in place until nothing is pending or running."""
    import time

    from rich.live import Live

    memory = Memory(run)
    info = refresh(run, memory)
    with Live(render(info), console=console, refresh_per_second=1) as live:
        while not finished(info):
            time.sleep(interval)
            info = refresh(run, memory)
            live.update(render(info))
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.status", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--watch", action="store_true", help="refresh until everything has finished")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    args = p.parse_args(argv)
    run = RunDir.given(args.run_dir)
    if run is None:
        return 2
    if args.json:
        info = refresh(run, Memory(run))
        info["results"] = _results(run, info, None)
        print(json.dumps(info))
        return 4 if "slurm_unreachable" in info else 0
    from rich.console import Console

    console = Console()
    if args.watch:
        info = watch(run, console, args.interval)
    else:
        info = refresh(run, Memory(run))
        console.print(render(info))
    results = _results(run, info, console)
    if results["current"]:
        console.print(f"Results: {results['path']}/")
    return 4 if "slurm_unreachable" in info else 1 if info["failures"] else 0


def _results(run: RunDir, info: dict, console) -> dict:
    """Once nothing is left to run, results/ match the finished evaluations:
    fitted here when they are older and no analysis job is coming to do it."""
    from synscale.analysis import inputs

    if not finished(info):  # an analysis job, or the local launch, fits them at the end
        return {"current": None, "path": str(run.results)}
    current = not inputs.stale(run)
    if not current and not _analysis_job_coming(run):
        if console is not None:
            console.print("Results are older than the evaluations: fitting them now.")
        from synscale.results import analyze_run
        from synscale.study.load import StudyError
        try:
            analyze_run(run.root, console=None)
            current = True
        except (StudyError, state.DamagedFile) as e:
            if console is not None:
                from rich.markup import escape
                said = " ".join(e.problems) if isinstance(e, StudyError) else str(e)
                console.print("[red]error:[/] " + escape(said), highlight=False)
    return {"current": current, "path": str(run.results)}


def _analysis_job_coming(run: RunDir) -> bool:
    from synscale.backends import slurm

    try:
        live = slurm.queue_states()
    except slurm.SlurmError:
        return False  # not known to be coming: say what results/ holds
    job = slurm.load_records(run, live).get("analysis")
    return bool(job) and job in live


if __name__ == "__main__":
    sys.exit(main())
