"""`python -m synscale.gc STORE [--dry-run] [--json]`: free a store of what no
run directory refers to.

A stage folder or image pool is kept while some run directory launched on
the store (STORE/runs/) plans it; one being written right now (its lock
held) is kept too. The rest is listed with its bytes and, without
--dry-run, removed. A run directory deleted by hand no longer holds
anything: its registration goes with its stages. Exit status: 0, or 2 for
a folder that is not a store.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from synscale.plan.store import StoreError, collect


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1e3:.1f} kB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.gc", description=__doc__.split("\n")[0])
    p.add_argument("store", type=Path, help="the store folder (launch --store)")
    p.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        garbage = collect(args.store, args.dry_run)
    except StoreError as e:
        Console(stderr=True).print(f"[red]error:[/] {e}", highlight=False)
        return 2
    if args.json:
        print(json.dumps({"store": str(args.store), "dry_run": args.dry_run,
                          "stages": [{"kind": k, "id": i, "bytes": b} for k, i, b in garbage.stages],
                          "pools": [{"content": c, "bytes": b} for c, b in garbage.pools],
                          "bytes": garbage.bytes, "live": garbage.live, "runs": garbage.runs,
                          "vanished_runs": garbage.gone}))
        return 0
    console = Console()
    verb = "would remove" if args.dry_run else "removed"
    table = Table(title=f"{args.store}: {verb} {len(garbage.stages)} stages and "
                        f"{len(garbage.pools)} image pools, {_size(garbage.bytes)}")
    for col in ("what", "bytes"):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    for kind, sid, size in garbage.stages:
        table.add_row(f"stages/{kind}/{sid}", _size(size))
    for content, size in garbage.pools:
        table.add_row(f"pool/{content}", _size(size))
    console.print(table)
    console.print(f"kept: what {len(garbage.runs)} run directories plan"
                  + (f", and {len(garbage.live)} being written now" if garbage.live else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
