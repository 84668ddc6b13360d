"""`python -m synscale.verify RUN_DIR [--deep] [--json]`: check every done stage.

Each done stage's outputs against what its DONE lists (plan/outputs.py):
sizes, and with --deep their sha256 (it reads every byte: the pack of an
ImageNet-scale study is hundreds of GB). A stage whose inputs were redone
with other outputs than it read is stale. Both are marked not done, so the
next launch redoes them (and then what reads them, where their outputs
change). Exit status 0 all intact, 1 some marked, 2 not a run directory.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synscale.plan import outputs, state, stored
from synscale.plan.layout import RunDir


def verify(run: RunDir, deep: bool = False, progress=None) -> dict[str, dict]:
    """{stage id: {"kind", "why"}} of the done stages found damaged or stale,
    each quarantined; in plan order, inputs first."""
    listed = stored.load_stages(run)
    kind_of = dict(zip(listed.ids, listed.kinds))
    digests: dict[str, str | None] = {}  # input id -> its outputs' digest now (None: not done)

    def now(sid: str) -> str | None:
        if sid not in digests:
            digests[sid] = outputs.current_digest(run.stage(kind_of[sid], sid)) \
                if sid in kind_of else None
        return digests[sid]

    found = {}
    for sid, kind in zip(listed.ids, listed.kinds):
        if progress:
            progress()
        folder = run.stage(kind, sid)
        if not state.is_done(folder):
            continue
        why = outputs.check(folder, deep) or outputs.redone_input(folder, now, kind_of)
        if why:
            outputs.quarantine(run, kind, sid, why)
            digests[sid] = None
            found[sid] = {"kind": kind, "why": why}
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.verify",
                                description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--deep", action="store_true", help="hash every output, not only its size")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    run = RunDir.given(args.run_dir)
    if run is None:
        return 2
    if args.json:
        found = verify(run, args.deep)
        print(json.dumps({"run_dir": str(run.root), "deep": args.deep, "marked": found}))
        return 1 if found else 0
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress

    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("verifying" + (" (hashing)" if args.deep else ""),
                            total=len(stored.load_stages(run).ids))
        found = verify(run, args.deep, lambda: bar.advance(task))
    if not found:
        console.print(f"every done stage of {run.root} is intact"
                      + (" (sizes and contents)" if args.deep else " (sizes; --deep hashes)"))
        return 0
    for sid, f in found.items():
        console.print(f"[red]damaged[/] {f['kind']}/{sid}: {escape(f['why'])}", highlight=False,
                      soft_wrap=True)
    console.print(f"{len(found)} stage(s) marked not done: launch again to redo them.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
