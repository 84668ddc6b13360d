"""`python -m synscale.check STUDY [--decode] [--workers N] [--json]`: the
study's image folders, checked before any work.

Without --decode, what a launch checks first (study/preflight.py), from
directory listings alone: a folder per class with the images the study
reads, evaluation folders whose class folders are the study's classes and
that hold every class they are scored on. With --decode every image of the
training folder and of each evaluation folder is opened (in parallel; on a
Slurm cluster, run it inside a CPU allocation for ImageNet-size folders:
`srun -c 32 python -m synscale.check STUDY --decode --workers 32`) and the
files that do not decode are listed. Exit status 0 all well, 1 problems or
undecodable files found, 2 the study does not load.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from synscale.study.load import StudyError, load_study


def _files(folder: Path) -> list[Path]:
    from synscale.data.folders import is_image
    return sorted(p for d in sorted(Path(folder).iterdir()) if d.is_dir()
                  for p in d.iterdir() if is_image(p))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.check",
                                description=__doc__.split("\n")[0])
    p.add_argument("study", type=Path)
    p.add_argument("--decode", action="store_true", help="open every image; list those that "
                   "do not decode")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                   help="decoding processes (default: this process's CPUs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    err = Console(stderr=True)
    try:
        study = load_study(args.study)
    except StudyError as e:
        for line in e.problems:
            err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return 2
    console = Console(stderr=args.json)
    if study.data.dataset != "imagefolder":
        if args.json:
            print(json.dumps({"study": str(args.study), "problems": [], "folders": [],
                              "undecodable": []}))
        else:
            console.print("Nothing to check: the digits ship with the project.")
        return 0
    from synscale.study.preflight import eval_folders, folder_problems
    problems = folder_problems(study)
    folders = [("train", "data.train_dir", study.data.train_dir)] + eval_folders(study)
    folders = [(n, k, f) for n, k, f in folders if f and Path(f).is_dir()]
    sizes = {f: _files(Path(f)) for _, _, f in folders}
    bad: list[tuple[str, str]] = []
    if args.decode:
        bad = _decode([p for f in sizes.values() for p in f], args.workers, console, args.json)
    if args.json:
        print(json.dumps({"study": str(args.study), "problems": problems,
                          "folders": [{"set": n, "key": k, "path": f, "images": len(sizes[f])}
                                      for n, k, f in folders],
                          "undecodable": [{"path": p, "why": w} for p, w in bad]}))
        return 1 if problems or bad else 0
    table = Table(title=f"Image folders of {study.study.name}", title_justify="left")
    for col in ("set", "key", "folder", "images"):
        table.add_column(col, justify="right" if col == "images" else "left")
    for n, k, f in folders:
        table.add_row(n, k, escape(f), f"{len(sizes[f]):,}")
    for line in problems:
        console.print(f"[red]problem:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for path, why in bad:
        console.print(f"[red]undecodable:[/] {escape(path)} ({escape(why)})", highlight=False,
                      soft_wrap=True)
    console.print(table)
    checked = "listed and decoded" if args.decode else "listed (--decode opens every image)"
    verdict = f"{len(problems)} problem(s), {len(bad)} undecodable file(s)" \
        if problems or bad else "no problems"
    console.print(f"{verdict}; folders {checked}.")
    return 1 if problems or bad else 0


def _decode(files: list[Path], workers: int, console: Console, quiet: bool):
    from rich.progress import Progress

    from synscale.data.inventory import decode_all
    with Progress(console=console, disable=quiet) as progress:
        task = progress.add_task("decoding", total=len(files))
        return decode_all(files, workers, lambda n: progress.advance(task, n))


if __name__ == "__main__":
    raise SystemExit(main())
