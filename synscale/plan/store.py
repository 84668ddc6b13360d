"""A store: the stage folders and image pools of every run directory launched
on it, content-addressed by the same ids, so that a second study or a
colleague's launch finds shared work done, and never does it twice.

STORE/
  stages/<kind>/<id>/    as in a run directory (one folder per stage, DONE last)
  pool/<config>/         a generation config's images
  runs/<key>.json        one per run directory launched on it: its path and the
                         pools its plan reads; what `gc` counts as referenced
  .gc.lock               held by gc (exclusive) and by a launch while it registers

A run directory on a store holds its study, plan, index, Slurm records and
results, and `store.json` naming the store (plan/layout.RunDir.home). Two
launches that plan the same stage compute it once: the stage folder's lock
(runtime/harness.py) is taken on the store's filesystem, across nodes, as in
a run directory.

A store is for a team: it is created setgid (new folders keep its group)
and group-writable, and a process that writes into it clears the group bits
of its umask, so a colleague in the group can read and extend everything.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from synscale.plan import state
from synscale.plan.layout import RunDir


class StoreError(ValueError):
    """A store that cannot be used as asked."""


def share_with_group() -> None:
    """Files and folders this process creates are group-readable and writable."""
    os.umask(os.umask(0) & ~0o070)


def open_store(path: Path) -> Path:
    """The store at `path`, created (setgid, group-writable) if missing."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        _create(path)
    if not path.is_dir():
        raise StoreError(f"store {path}: exists and is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(f"store {path}: not writable by this user (group {_group(path)}); "
                         "ask its owner to add you to the group, or use another --store")
    share_with_group()
    for sub in SUBFOLDERS:
        (path / sub).mkdir(exist_ok=True)
    return path


SUBFOLDERS = ("stages", "pool", "runs")


def _create(path: Path) -> None:
    """Made whole beside `path` (setgid, its subfolders in it) and renamed
    into place: two launches racing on a new store both end up on the one
    that was renamed first, and no folder is made before the setgid bit."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        share_with_group()
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=state.TMP_SUFFIX,
                                    dir=path.parent))
        tmp.chmod(0o2775)
        for sub in SUBFOLDERS:
            (tmp / sub).mkdir()
    except OSError as e:
        raise StoreError(f"store {path}: cannot create it ({e.strerror})") from None
    try:
        os.rename(tmp, path)  # fails where another launch's is there already (not empty)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _group(path: Path) -> str:
    import grp
    gid = path.stat().st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def key(run: RunDir) -> str:
    return hashlib.sha256(str(Path(run.root).resolve()).encode()).hexdigest()[:16]


@contextmanager
def _gc_lock(store: Path, exclusive: bool) -> Iterator[None]:
    fd = os.open(store / ".gc.lock", os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def attach(run: RunDir, store: Path, pools: list[str]) -> None:
    """Put `run` on `store` (store.json) and register it with the pools its plan
    reads. Called by a launch after plan.json is written and before any stage
    runs, under the store's gc lock (shared): gc then sees the plan whole."""
    store = open_store(store)
    current = run.home if run.store_file.exists() else None
    if current is not None and Path(current).resolve() != store:
        raise StoreError(f"{run.root} was launched on the store {current}; launch it with "
                         f"--store {current}, or give another --root for {store}")
    with _gc_lock(store, exclusive=False):
        if current is None:
            state.write_json(run.store_file, {"path": str(store)})
        state.write_json(store / "runs" / f"{key(run)}.json",
                         {"run": str(Path(run.root).resolve()), "pools": sorted(set(pools)),
                          "registered": time.time()})


@dataclass
class Garbage:
    """What gc found: unreferenced stage folders and pools, with their bytes."""
    stages: list[tuple[str, str, int]] = field(default_factory=list)  # kind, id, bytes
    pools: list[tuple[str, int]] = field(default_factory=list)        # content, bytes
    live: list[str] = field(default_factory=list)       # unreferenced, but being written
    runs: list[str] = field(default_factory=list)       # registered run directories
    gone: list[str] = field(default_factory=list)       # registrations of vanished runs

    @property
    def bytes(self) -> int:
        return sum(b for *_, b in self.stages) + sum(b for _, b in self.pools)


def find_garbage(store: Path) -> Garbage:
    """Stage folders and pools no registered run directory's plan refers to."""
    from synscale.plan.stored import load_stages

    out = Garbage()
    stages: set[tuple[str, str]] = set()
    pools: set[str] = set()
    for entry in sorted((store / "runs").glob("*.json")):
        try:
            record = json.loads(entry.read_text())
            run = RunDir(Path(record["run"]))
            if not run.store_file.exists() or Path(run.home).resolve() != store.resolve():
                raise FileNotFoundError
            listed = load_stages(run)
        except (OSError, ValueError, KeyError, TypeError):
            out.gone.append(entry.name)
            continue
        out.runs.append(str(run.root))
        stages.update(zip(listed.kinds, listed.ids))
        pools.update(record.get("pools", ()))
    for kind_dir in sorted((store / "stages").iterdir()) if (store / "stages").is_dir() else ():
        for folder in sorted(kind_dir.iterdir()):
            if (kind_dir.name, folder.name) in stages:
                continue
            if _live(folder):
                out.live.append(f"stages/{kind_dir.name}/{folder.name}")
            else:
                out.stages.append((kind_dir.name, folder.name, _bytes(folder)))
    for folder in sorted((store / "pool").iterdir()) if (store / "pool").is_dir() else ():
        if folder.name in pools:
            continue
        if _live(folder, ranges=True):
            out.live.append(f"pool/{folder.name}")
        else:
            out.pools.append((folder.name, _bytes(folder)))
    return out


def collect(store: Path, dry_run: bool) -> Garbage:
    """find_garbage, and unless `dry_run` remove it, holding the gc lock so that
    no launch registers a plan meanwhile."""
    store = Path(store).resolve()
    if not (store / "runs").is_dir():
        raise StoreError(f"{store}: not a synscale store (no runs/ folder)")
    with _gc_lock(store, exclusive=True):
        garbage = find_garbage(store)
        if not dry_run:
            for kind, sid, _ in garbage.stages:
                shutil.rmtree(store / "stages" / kind / sid, ignore_errors=True)
            for content, _ in garbage.pools:
                shutil.rmtree(store / "pool" / content, ignore_errors=True)
            for name in garbage.gone:
                (store / "runs" / name).unlink(missing_ok=True)
    return garbage


def _live(folder: Path, ranges: bool = False) -> bool:
    """Someone holds its lock: a stage running (flock on the stage's .lock), or
    a pool being filled (`ranges`: a byte-range lock on the pool's .lock, which
    a test of the whole file meets)."""
    lock = folder / ".lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        if ranges:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
