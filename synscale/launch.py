"""`python -m synscale.launch STUDY`: validate, plan, run what is not done, report.

Exit status: 0 when every stage is done (slurm: done or submitted), 1 when
some failed and are not resubmitted, 2 for a study that cannot run (nothing
written), 3 when another launch holds the study.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from synscale.plan import cost, footprint, index, state, stored
from synscale.plan.graph import KINDS, Plan
from synscale.plan.layout import RunDir
from synscale.study import preflight
from synscale.study.expand import expand
from synscale.study.load import StudyError, load_study


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m synscale.launch", description=__doc__.split("\n")[0])
    p.add_argument("study", help="study TOML file")
    p.add_argument("--backend", choices=("local", "slurm"), help="overrides [backend] name")
    p.add_argument("--root", default="runs", help="folder holding run directories (default: runs)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write and run nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--watch", action="store_true",
                   help="slurm: after submitting, show live status until everything finished")
    p.add_argument("--workers", type=int, help="local: stages at once (overrides [backend] workers)")
    p.add_argument("--pilot", action="store_true",
                   help="run a shrunk copy of the study under RUN_DIR/pilot and write the rates "
                        "it measured to RUN_DIR/calibration.json (what --dry-run's cost reads)")
    p.add_argument("--calibration", type=Path,
                   help="rates to cost the plan with (default: RUN_DIR/calibration.json)")
    p.add_argument("--store", type=Path,
                   help="a folder where finished stages live, shared by studies and a team "
                        "(overrides [study] store); a stage done there is not run again")
    return p.parse_args(argv)


def _counts(plan: Plan, done: set[str]) -> dict:
    total = Counter(s.kind for s in plan.stages)
    finished = Counter(s.kind for s in plan.stages if s.id in done)
    return {k: {"stages": total[k], "done": finished[k]} for k in KINDS if total[k]}


def _print_plan(console: Console, study, plan: Plan, done: set[str], run: RunDir) -> None:
    console.print(f"[bold]{study.study.name}[/]  {study.study.description}".rstrip())
    axes = Table(title="sweep axes", show_header=True)
    axes.add_column("axis")
    axes.add_column("values")
    sw, g, m = study.sweep, study.generate, study.model
    rows = [("sources", sw.sources)]
    rows += [(f"{source} images/class", getattr(sw, f"{source}_images_per_class"))
             for source in ("real", "synthetic", "mixture") if source in sw.sources]
    if "mixture" in sw.sources:
        rows.append(("synthetic shares", sw.synthetic_shares))
    if {"synthetic", "mixture"} & set(sw.sources):
        rows += [("generators", g.generators), ("prompts", g.prompts), ("guidance", g.guidance)]
    rows += [("model", (m.arch if m.objective == "classifier" else f"CLIP, {m.arch}",)),
             ("width", m.width), ("eval sets", study.evaluate.sets)]
    if m.objective == "clip":
        rows.append(("zero-shot templates", study.evaluate.zero_shot_templates))
    from synscale.study.curation import quality_rules
    c = study.curate
    rows += [("filters", [label for _, label in quality_rules(c)]),
             ("snapshots", [f"year<={y}" for y in c.snapshots]),
             ("blends", list(c.blends)), ("leave one out", c.leave_one_out)]
    for name, values in rows:
        if values:
            axes.add_row(name, ", ".join(str(v) for v in values))
    console.print(axes)
    table = Table(title=f"plan ({run.root})")
    for col in ("kind", "stages", "done", "to run"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for kind, c in _counts(plan, done).items():
        table.add_row(kind, str(c["stages"]), str(c["done"]), str(c["stages"] - c["done"]))
    console.print(table)


def _over_scratch(study, kinds) -> str | None:
    limit = study.study.max_scratch_tb
    need = footprint.peak_scratch_bytes(kinds, study) / 1e12
    if limit and need > limit:
        return (f"{study.path}: study.max_scratch_tb = {limit:g}: the plan's estimated peak "
                f"scratch is {need:.2f} TB (--dry-run shows it per stage kind); raise the limit, "
                "shrink the sweep, or lower [generate] image_quality")
    return None


def _left_behind(run: RunDir, plan: Plan) -> dict[str, int]:
    """Finished stages of the plan this run directory last ran that the new plan
    does not have, per kind: kept on disk, and not used."""
    if not run.plan_file.exists():
        return {}
    try:
        old = stored.load_stages(run)
    except (OSError, ValueError) as e:
        return {"unreadable plan.json": 1} if str(e) else {}
    ids = plan.by_id
    gone = [(sid, kind) for sid, kind in zip(old.ids, old.kinds) if sid not in ids]
    if not gone:
        return {}
    finished = index.done_ids(run, gone, record=False)
    return dict(Counter(kind for sid, kind in gone if sid in finished))


def _left_note(left: dict[str, int], plan: Plan, done: set[str]) -> str:
    counts = ", ".join(f"{n} {kind}" for kind, n in left.items())
    return (f"this run directory holds {sum(left.values())} finished stages the plan does not "
            f"have ({counts}): the study changed, or an older synscale planned them (stage ids "
            "hash content since 0.2: README, 'Growing a study'). They stay on disk, unused"
            + ("; the images of generate stages stay in their pool, for the plan's chunks"
               if "generate" in left else "")
            + f"; of the plan's {len(plan.stages)} stages {len(plan.stages) - len(done)} are to "
            "run.")


def _store_problem(run: RunDir, store: Path) -> str | None:
    """Why this run directory cannot use `store`, before anything is written."""
    if store.exists() and not store.is_dir():
        return f"--store {store}: exists and is not a folder"
    made = next(p for p in (store, *store.parents) if p.exists())  # or what it is made in
    if not made.is_dir():
        return f"--store {store}: {made} is a file, not a folder"
    if not os.access(made, os.W_OK | os.X_OK):
        return (f"--store {store}: {made} is not writable by this user; ask its owner to add "
                "you to its group, or use another --store")
    if run.store_file.exists() and Path(run.home).resolve() != store.resolve():
        return (f"{run.root} was launched on the store {run.home}; launch it with --store "
                f"{run.home}, or give another --root for {store}")
    if not run.store_file.exists() and (run.root / "stages").is_dir():
        return (f"{run.root} holds its own stages; a store cannot take it over: give another "
                f"--root for --store {store}")
    return None


def _on_store(run: RunDir, store: Path) -> RunDir:
    """A run directory about to be put on a store (its store.json not written
    yet): its stages are looked for there already."""
    return run if run.store_file.exists() else RunDir(run.root, store.expanduser().resolve())


def _padding_note(study, plan: Plan) -> str | None:
    """What rendering each class's last batch whole costs, if anything."""
    from synscale.plan.batches import padding_note
    gens = plan.of_kind("generate")
    largest = max((g.spec["indices"][1] for g in gens), default=0)
    return gens and padding_note(largest, gens[0].spec["batch_size"])


def _costs(args, study, plan, run, backend, done: set[str] = frozenset()):
    """What running the plan's stages not `done` costs, counting only the images
    each config's pool lacks: a grown study costs what it adds."""
    import functools

    from synscale.plan.layout import pool_coverage
    calibration = cost.read_calibration(args.calibration or run.root / "calibration.json")
    covered = functools.cache(lambda content: pool_coverage(run.pool(content)))
    to_run = {s.id for s in plan.stages if s.id not in done} if done else None
    return cost.estimate(study, plan, backend, calibration, only=to_run,
                         covered=covered), calibration


def _over_budget(study, kinds) -> str | None:
    limit, need = study.study.max_gpu_hours, cost.total(kinds)["gpu_hours"]
    if limit and need > limit:
        return (f"{study.path}: study.max_gpu_hours = {limit:g}: the plan's estimated cost is "
                f"{need:,.0f} GPU-hours (--dry-run shows it per stage kind); raise the limit or "
                "shrink the sweep")
    return None


def _print_cost(console: Console, kinds, calibration: dict) -> None:
    t = Table(title="compute of the stages to run (estimates: README, \"What a study costs\")")
    for col in ("kind", "stages", "hours", "wall time", "rates from"):
        t.add_column(col, justify="left" if col in ("kind", "rates from") else "right")
    for kind, c in kinds.items():
        t.add_row(kind, f"{c.stages:,}", f"{c.hours:,.1f} {c.device.upper()}-h",
                  f"{c.wall_s / 3600:,.1f} h", c.source)
    console.print(t)
    tot = cost.total(kinds)
    seen = calibration.get("hardware", {}).get("device")
    console.print(f"in all: {tot['gpu_hours']:,.0f} GPU-hours, {tot['cpu_hours']:,.0f} CPU-hours, "
                  f"about {tot['wall_hours']:,.1f} h of wall time at each kind's max_parallel"
                  + (f"; rates from a calibration of {seen} ({calibration.get('date')}), the "
                     "planning rules where it has none" if calibration else
                     "; no calibration: planning rates (launch --pilot measures this cluster's)"))


def _print_footprint(console: Console, study, kinds, backend: str) -> None:
    from synscale.study.schema import Resources
    t = Table(title="footprint (estimates: README, \"What a study occupies\")")
    for col in ("kind", "stages", "images", "files", "on disk", "while running", "memory/node",
                "mem_gb asked"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for kind, f in kinds.items():
        asked = (study.resources.get(kind) or Resources()).mem_gb
        t.add_row(kind, f"{f.stages:,}", f"{f.images:,}" if f.images else "",
                  f"{f.files:,}" if f.files else "",
                  _size(f.bytes), _size(f.transient_bytes) if f.transient_bytes else "",
                  f"{f.node_gb:.1f} GB" + (f" (GPU {f.gpu_gb:.1f})" if f.gpu_gb else ""),
                  f"{asked:g} GB" if backend == "slurm" else "")
    console.print(t)
    console.print(f"on disk when finished: {_size(sum(f.bytes for f in kinds.values()))}; peak "
                  f"scratch: {_size(footprint.peak_scratch_bytes(kinds, study))}")
    for line in footprint.memory_warnings(kinds, study, backend):
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1e3:.1f} kB"


def _progress_bars(console: Console, plan: Plan):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console,
                        transient=False)
    totals = Counter(s.kind for s in plan.stages)
    tasks = {k: progress.add_task(k, total=totals[k], note="") for k in KINDS if totals[k]}
    failed = Counter()

    def update(stage, status):
        if status in ("done", "skipped"):
            progress.advance(tasks[stage.kind])
        else:
            failed[stage.kind] += 1
            progress.update(tasks[stage.kind], note=f"[red]{failed[stage.kind]} failed/blocked")
    return progress, update


def main(argv=None) -> int:
    args = _parse(argv)
    console = Console(stderr=args.json)
    if not console.is_terminal:  # a log file or CI: room for the wide result tables
        console = Console(stderr=args.json, width=160)
    err = Console(stderr=True)
    try:
        study = load_study(args.study)
    except StudyError as e:
        for line in e.problems:
            err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        err.print(f"{len(e.problems)} problem(s); nothing was written.")
        return 2
    backend = args.backend or study.backend.name
    plan = expand(study)
    run = RunDir(Path(args.root) / study.study.name)
    store = args.store or (Path(study.study.store).expanduser() if study.study.store else None)
    if store is not None:
        problem = _store_problem(run, Path(store))
        if problem:
            err.print(f"[red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
            err.print("1 problem(s); nothing was written.")
            return 2
        # stages done on the store count as done, in a dry run too
        run = _on_store(run, Path(store))
    # the done index, and the folders of stages not in it; a dry run writes nothing
    unreadable: dict[str, str] = {}  # DONE files that do not parse: quarantined under the lock
    done = index.done_ids(run, ((s.id, s.kind) for s in plan.stages), record=not args.dry_run,
                          unreadable=unreadable)
    summary = {"study": study.study.name, "run_dir": str(run.root), "backend": backend,
               "stages": {k: c["stages"] for k, c in _counts(plan, done).items()}}
    left = _left_behind(run, plan)
    if left:
        summary["not_in_plan"] = left
        console.print(f"[yellow]note:[/] {escape(_left_note(left, plan, done))}", highlight=False)
    if args.pilot:
        from synscale import pilot
        from synscale.backends.slurmctl import SlurmError
        try:
            return pilot.run(study, Path(args.root), backend, console, args.json)
        except SlurmError as e:
            err.print(f"[red]error:[/] {escape(str(e))}; launch the pilot again once "
                      "`scontrol ping` says UP", highlight=False, soft_wrap=True)
            return 4
    if args.dry_run:
        kinds = footprint.estimate(study, plan, backend)
        costs, calibration = _costs(args, study, plan, run, backend, done)
        over = [x for x in (_over_scratch(study, kinds), _over_budget(study, costs)) if x]
        padding = _padding_note(study, plan)
        if args.json:
            print(json.dumps({**summary, "dry_run": True, "done": len(done),
                              "to_run": len(plan.stages) - len(done),
                              "footprint": footprint.as_json(kinds, study, backend),
                              "cost": {**cost.as_json(costs),
                                       "calibration": calibration or None},
                              "notes": [padding] if padding else []}))
        else:
            _print_plan(console, study, plan, done, run)
            _print_footprint(console, study, kinds, backend)
            _print_cost(console, costs, calibration)
            if padding:
                console.print(f"[yellow]note:[/] {escape(padding)}", highlight=False)
            for line in preflight.problems(study, backend, plan) + over:
                console.print(f"[yellow]would stop at launch:[/] {escape(line)}", highlight=False)
        return 0
    problems = preflight.problems(study, backend, plan)
    if study.study.max_scratch_tb and not problems:
        over = _over_scratch(study, footprint.estimate(study, plan, backend))
        problems += [over] if over else []
    if study.study.max_gpu_hours:  # from the specs alone: checked whatever else is wrong
        over = _over_budget(study, _costs(args, study, plan, run, backend, done)[0])
        problems += [over] if over else []
    if problems:
        for line in problems:
            err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        err.print(f"{len(problems)} problem(s); nothing was written or submitted.")
        return 2
    try:
        with state.exclusive(run.lock_file):
            return _launch(args, console, study, plan, run, summary, done, unreadable)
    except state.Locked as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        return 3


def _launch(args, console, study, plan, run, summary, done, unreadable) -> int:
    from synscale.analysis import inputs
    from synscale.plan import outputs, tensorboard

    state.write_text(run.study_file, study.text)
    stored.write_plan(run, plan)  # unless it holds this plan already
    if run.home != run.root:  # registered once its plan is written: gc sees it whole
        from synscale.plan import store
        try:
            store.attach(run, run.home, [g.content_key for g in plan.of_kind("generate")])
        except store.StoreError as e:
            Console(stderr=True).print(f"[red]error:[/] {escape(str(e))}", highlight=False,
                                       soft_wrap=True)
            return 2
    tensorboard.update(run, plan)  # every training's curve, named by its axes
    evaluations = [s.id for s in plan.stages if s.kind == "evaluate" and s.id in done]
    # what is about to be read is checked first: a damaged stage is redone now
    damaged = outputs.before_reading(run, plan, done, unreadable,
                                     evaluations_read=not inputs.current(run, evaluations))
    if damaged:
        summary["damaged"] = damaged
        for sid, why in damaged.items():
            console.print(f"[yellow]damaged[/] {plan.by_id[sid].kind}/{sid}: {escape(why)}; "
                          "marked not done, to be redone", highlight=False, soft_wrap=True)
        evaluations = [s.id for s in plan.stages if s.kind == "evaluate" and s.id in done]
    if len(done) == len(plan.stages) and inputs.current(run, evaluations):
        if args.json:
            print(json.dumps({**summary, "submitted": 0, "skipped_done": len(done), "failed": 0,
                              "results": str(run.results)}))
        else:
            console.print(f"Nothing to do: all {len(plan.stages)} stages of "
                          f"{study.study.name} are done. Results: {run.results}/")
        return 0
    if args.backend == "slurm" or (args.backend is None and study.backend.name == "slurm"):
        return _submit(args, console, study, plan, run, summary)
    from synscale.backends.local import run_plan
    from synscale.results import analyze_run

    workers = args.workers or study.backend.workers
    progress, update = _progress_bars(console, plan)
    # stages marked damaged (here, by verify, by a reader): once redone, what read them
    again = {s.id for s in plan.stages if s.id not in done and
             (run.stage(s.kind, s.id) / "DONE.damaged").exists()}
    with progress:
        outcome = run_plan(plan, run, workers, update)
        redone = set(damaged) | again
        while redone:  # what read a redone stage is redone where its outputs changed
            redone = set(outputs.stale_readers(run, plan, redone))
            for sid in sorted(redone):
                console.print(f"[yellow]redoing[/] {plan.by_id[sid].kind}/{sid}: an input "
                              "was redone with other outputs", highlight=False)
            if redone:
                # (the bars counted these stages once already)
                more = run_plan(plan, run, workers, lambda stage, st: None)
                outcome.ran += more.ran
                outcome.failed.update(more.failed)
                outcome.blocked += more.blocked
    if inputs.stale(run):  # no evaluation finished since the last fit: nothing to refit
        try:
            analyze_run(run.root, console=None if args.json else console)
        except state.DamagedFile as e:  # checked by size before; this one only hashes tell
            Console(stderr=True).print(f"[red]error:[/] {escape(str(e))}", highlight=False,
                                       soft_wrap=True)
            return 1
    elif not args.json:
        console.print(f"No evaluation finished since the results were fitted: {run.results}/")
    if args.json:
        print(json.dumps({**summary, "submitted": len(outcome.ran) + len(outcome.failed),
                          "skipped_done": len(outcome.skipped_done), "failed": len(outcome.failed),
                          "blocked": len(outcome.blocked), "results": str(run.results)}))
    else:
        for sid, line in outcome.failed.items():
            s = plan.by_id[sid]
            console.print(f"[red]failed[/] {s.kind}/{sid}: {line}\n  log: "
                          f"{run.stage(s.kind, sid) / 'log.txt'}", highlight=False)
        if outcome.blocked:
            console.print(f"{len(outcome.blocked)} stage(s) not run because an input failed; "
                          "fix the failure and launch again.")
        console.print(_results_line(run.results))
    return 1 if outcome.failed else 0


def _results_line(results: Path) -> str:
    """Where the results are, naming the plots (the sample grids among them)."""
    plots = sorted(p.name for p in (Path(results) / "plots").glob("*.png"))
    return f"Results: {results}/ (metrics.csv, fits.json, summary.md" + \
        (f"; plots/: {', '.join(plots)})" if plots else ")")


def _submit(args, console, study, plan, run, summary) -> int:
    from synscale.backends import code
    from synscale.backends.profile import load_profile
    from synscale.backends.slurm import SlurmError, submit_plan

    profile, _ = load_profile(study.backend.profile, study.path)  # preflight checked it
    pinned = code.snapshot(run.root)  # what the jobs import, whatever the checkout becomes
    try:
        sub = submit_plan(plan, run, study, profile, code_dir=pinned.folder)
    except SlurmError as e:  # after the preflight's ping: Slurm went away, or refused
        Console(stderr=True).print(
            f"[red]error:[/] {escape(str(e))}\nWhat was submitted before is recorded "
            f"(slurm/submissions.json); launch again "
            f"{'once `scontrol ping` says UP' if e.unreachable else 'when this is fixed'}: "
            "it submits the rest, nothing twice.", highlight=False, soft_wrap=True)
        return 4
    pin = code.after_submission(run.root, pinned, {s.id: s.kind for s in plan.stages}, sub)
    if args.json:
        print(json.dumps({**summary, "submitted": len(sub.submitted),
                          "skipped_done": len(sub.skipped_done),
                          "skipped_queued": len(sub.skipped_live), "failed": 0,
                          "not_retried": sub.not_retried, "retried": sub.retried,
                          "arrays": sub.arrays, "analysis_job": sub.analysis, "code": pin,
                          "results": _results_if_finished(run, sub, None)}))
        return 1 if sub.not_retried else 0
    if pin["message"]:
        console.print(pin["message"], style="yellow", markup=False, highlight=False,
                      soft_wrap=True)
    for sid, why in sub.not_retried.items():
        s = plan.by_id[sid]
        console.print(f"[yellow]not resubmitted[/] {s.kind}/{sid}: {escape(why)}", highlight=False)
    for sid, why in sub.retried.items():
        s = plan.by_id[sid]
        console.print(f"[cyan]resubmitted[/] {s.kind}/{sid} after {escape(why)}", highlight=False)
    if not sub.submitted:
        console.print(f"Nothing to submit: {len(sub.skipped_done)} stages done, "
                      f"{len(sub.skipped_live)} already queued or running.")
        results = _results_if_finished(run, sub, console)
        if results:
            console.print(_results_line(results))
        return 1 if sub.not_retried else 0
    table = Table(title=f"submitted {len(sub.submitted)} stages in {len(sub.arrays)} arrays")
    for col in ("array", "kind", "tasks", "after"):
        table.add_column(col)
    for a in sub.arrays:
        table.add_row(a["job_id"], a["kind"], str(a["tasks"]), ", ".join(a["dependency"]))
    console.print(table)
    console.print(f"{len(sub.skipped_done)} done and {len(sub.skipped_live)} queued stages were "
                  f"not submitted again. Watch: python -m synscale.status "
                  f"{shlex.quote(str(run.root))} --watch", markup=False, highlight=False,
                  soft_wrap=True)  # whole on one line, to paste
    if sub.analysis:
        console.print(f"Job {sub.analysis} writes {run.results}/ once the evaluations end.")
    if args.watch:
        from synscale.status import watch
        return 1 if watch(run, console)["failures"] or sub.not_retried else 0
    return 1 if sub.not_retried else 0


def _results_if_finished(run, sub, console) -> str | None:
    """A run with nothing queued, running or to submit, and no analysis job
    coming: bring results/ up to date here if they are older than the
    evaluations (a run launched before the analysis job existed, or whose
    analysis job was cancelled)."""
    from synscale.analysis import inputs

    if sub.submitted or sub.skipped_live or sub.analysis:
        return None
    if inputs.stale(run):
        from synscale.results import analyze_run
        analyze_run(run.root, console=console)
    return str(run.results)


if __name__ == "__main__":
    sys.exit(main())
