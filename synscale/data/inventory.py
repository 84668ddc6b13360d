"""What a study's image folders hold, from directory listings alone: checked
before anything runs (the dry run and the launch: study/preflight.py) and by
`python -m synscale.check`.

Names and counts only, no file opened: ImageNet's 1.28M training files are
one `scandir` per class folder (seconds on a local disk, a minute on a slow
network filesystem). Whether each file decodes is `decode_all`'s question,
which `check --decode` asks.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from synscale.data.folders import class_key, is_image

SHOWN = 10  # names an error message lists; the rest are counted


def count_images(folder: Path) -> int:
    """Image files directly in `folder` (by suffix, as the stages take them)."""
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if is_image(Path(e.name)) and e.is_file())


def _listed(names: list[str], more: str = "") -> str:
    cut = f", and {len(names) - SHOWN} more{more}" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + cut


def train_problems(where: str, train_dir: Path, classes, need: int) -> list[str]:
    """Each class of the list has a folder in `train_dir` holding at least
    `need` images (the largest real size the study reads)."""
    missing, short = [], []
    for c in classes:
        folder = Path(train_dir) / class_key(c)
        if not folder.is_dir():
            missing.append(class_key(c))
            continue
        n = count_images(folder)
        if n < max(need, 1):
            short.append(f"{class_key(c)} ({n})")
    out = []
    if missing:
        out.append(f"{where} = {str(train_dir)!r}: no folder for {len(missing)} of "
                   f"{len(classes)} classes: {_listed(missing)} (class folders are named by "
                   "wnid, or by class name for class lists without wnids)")
    if short:
        out.append(f"{where} = {str(train_dir)!r}: {len(short)} class folder(s) hold fewer "
                   f"images than the {need} per class the study reads: {_listed(short)}")
    return out


@dataclass
class EvalFolder:
    """An evaluation folder's class folders, matched to the class list."""
    present: dict[int, int] = field(default_factory=dict)   # class index -> images
    unknown: list[str] = field(default_factory=list)        # folder names that match no class
    empty: list[str] = field(default_factory=list)          # class folders with no images


def names_of(classes) -> dict[str, int]:
    """Every folder name a class may have in an evaluation folder: its wnid,
    its index (ImageNet-V2's 0..999) or its name."""
    out: dict[str, int] = {}
    for c in classes:
        for key in (c.wnid, str(c.index), c.clip_name):
            if key:
                out.setdefault(key, c.index)
    return out


def scan_eval(folder: Path, classes) -> EvalFolder:
    by_name, out = names_of(classes), EvalFolder()
    with os.scandir(folder) as entries:
        subs = sorted(e.name for e in entries if e.is_dir())
    for name in subs:
        if name not in by_name:
            out.unknown.append(name)
            continue
        n = count_images(Path(folder) / name)
        if n:
            out.present[by_name[name]] = out.present.get(by_name[name], 0) + n
        else:
            out.empty.append(name)
    return out


def _close(name: str, by_name: dict[str, int]) -> str:
    lower = {k.lower(): k for k in by_name}
    if name.lower() in lower:
        return f"{name!r} (did you mean {lower[name.lower()]!r}?)"
    hint = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.75)
    return f"{name!r} (did you mean {hint[0]!r}?)" if hint else repr(name)


def eval_problems(where: str, folder: Path, classes, expected: set[int] | None,
                  partial: bool) -> list[str]:
    """An evaluation folder's class folders are classes of the list, and it
    holds every class it is scored on (`expected`: all, or a set's subset)
    unless `partial`."""
    by_name = names_of(classes)
    found = scan_eval(folder, classes)
    out = []
    if found.unknown:
        example = ", ".join(class_key(c) for c in list(classes)[:3])
        out.append(f"{where} = {str(folder)!r}: class folder(s) not in the study's class list: "
                   f"{_listed([_close(n, by_name) for n in found.unknown])}; a class folder "
                   f"is named by its wnid, class index or class name (e.g. {example})")
    want = set(range(len(classes))) if expected is None else expected
    lacking = sorted(want - set(found.present))
    if not found.present and not found.unknown:
        out.append(f"{where} = {str(folder)!r}: no images in any class folder")
    elif lacking and not partial and found.present:
        names = [class_key(list(classes)[i]) for i in lacking]
        out.append(f"{where} = {str(folder)!r}: no images for {len(lacking)} of the "
                   f"{len(want)} classes it is scored on: {_listed(names)}; add them, or set "
                   "[evaluate] partial = true to score on the classes it holds (each score "
                   "then says on how many)")
    return out


def decode_all(files: list[Path], workers: int, progress=None) -> list[tuple[str, str]]:
    """[(path, why)] of the files that do not decode, in name order, each
    opened in one of `workers` processes. `progress(n)` after each chunk."""
    from concurrent.futures import ProcessPoolExecutor

    chunks = [files[i:i + 256] for i in range(0, len(files), 256)]
    bad: list[tuple[str, str]] = []
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for chunk, found in zip(chunks, pool.map(_decode_chunk, chunks)):
            bad += found
            if progress:
                progress(len(chunk))
    return sorted(bad)


def _decode_chunk(files: list[Path]) -> list[tuple[str, str]]:
    from synscale.data.decode import BadImage, rgb
    out = []
    for f in files:
        try:
            rgb(f)
        except BadImage as e:
            out.append((e.path, e.why))
    return out
