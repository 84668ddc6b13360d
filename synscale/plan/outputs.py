"""What a done stage wrote, listed in its DONE, and checked before it is read.

DONE is written last and lists the stage's outputs, {path: [bytes, sha256]}
(paths relative to the stage folder; a generate stage's shards live in its
config's pool, `../../../pool/...`), and the digest of each input's list as
it was read. A stage is damaged when its DONE does not parse or an output is
missing or of another size (`check`; `deep` also hashes); a damaged stage is
quarantined (`quarantine`): DONE becomes DONE.damaged beside a DAMAGED note
saying why, and a line in the done index un-does it, so status says so and a
relaunch redoes it.

Checking costs no more than what is about to be read: the harness checks a
stage's inputs before reading them, a launch the inputs of what it will run
and the evaluations the analysis reads; `python -m synscale.verify` checks a
whole run. Bookkeeping files (logs, heartbeats, attempt and failure records,
locks, temporaries) are not outputs: they change without the outputs changing.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from synscale.plan import state
from synscale.plan.index import DoneIndex

BOOKKEEPING = {"DONE", "DONE.damaged", "DAMAGED", "RELEASED", "log.txt", "attempt.json",
               "heartbeat", ".lock", "error.json", "exit.json", "startup.json",
               "bad_images.jsonl"}
CHUNK = 1 << 20


class InputDamaged(RuntimeError):
    """An input stage's outputs are not what its DONE lists (failure class
    "input damaged": the relaunch redoes the input, then this stage)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def listing(folder: Path, extra: list[Path] = ()) -> dict[str, list]:
    """{relative path: [bytes, sha256]} of the stage's outputs: every file
    under its folder but bookkeeping and temporaries, and `extra` (files it
    wrote elsewhere)."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() and p.name not in BOOKKEEPING
             and not p.name.endswith(state.TMP_SUFFIX)]
    out = {}
    for p in sorted({*files, *map(Path, extra)}):
        out[os.path.relpath(p, folder)] = [p.stat().st_size, sha256(p)]
    return out


def digest(outputs: dict) -> str:
    """One hash of an outputs list: what a reader records of an input."""
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()[:16]


def read_done(folder: Path) -> dict:
    """A stage's DONE, or ValueError naming the file and what is wrong."""
    path = Path(folder) / "DONE"
    try:
        done = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: does not parse ({e.__class__.__name__}: {e})") from None
    if not isinstance(done, dict):
        raise ValueError(f"{path}: not a JSON object")
    return done


def check(folder: Path, deep: bool = False) -> str | None:
    """Why the done stage in `folder` is damaged, or None. A DONE from before
    outputs were listed is taken as it is; a released stage's files are
    expected gone (it runs again before anything reads it)."""
    folder = Path(folder)
    try:
        done = read_done(folder)
    except ValueError as e:
        return str(e)
    listed = done.get("outputs")
    if listed is None or state.is_released(folder):
        return None
    if "covers" in done:  # a generate stage's images, in its config's pool
        missing = _uncovered(folder, done["covers"])
        if missing:
            return missing
    for rel, (size, sha) in sorted(listed.items()):
        p = folder / rel
        try:
            now = p.stat().st_size
        except OSError:
            return f"{p.resolve()}: missing"
        if now != size:
            return f"{p.resolve()}: {now} bytes, DONE lists {size}"
        if deep and sha256(p) != sha:
            return f"{p.resolve()}: content differs from what DONE lists (sha256)"
    return None


def _uncovered(folder: Path, covers: dict) -> str | None:
    """The first images of the range a generate stage rendered that no
    shard in the pool holds. Shards are named by their range: one listing
    of the pool (kept while the pool folder is unchanged, since a pack
    checks every chunk of one config), no file opened."""
    from synscale.plan.batches import gaps

    pool = (Path(folder) / covers["pool"]).resolve()
    a, b = covers["indices"]
    for fresh in (False, True):
        # a folder's mtime ticks coarsely: a shard added in the tick of the
        # cached listing leaves the stamp as it was, so a gap is looked at again
        held = _pool_ranges(pool, fresh)
        lost = next(((c, g[0]) for c in range(*covers["classes"])
                     for g in [gaps(held.get(c, []), a, b)] if g), None)
        if lost is None:
            return None
    c, (x, y) = lost
    return f"{pool}: no shard holds class {c} images [{x}, {y})"


_listed: dict[Path, tuple[int, dict]] = {}


def _pool_ranges(pool: Path, fresh: bool = False) -> dict[int, list[tuple[int, int]]]:
    """layout.pool_coverage, again only when the pool folder changed (or `fresh`)."""
    from synscale.plan.layout import pool_coverage

    try:
        stamp = pool.stat().st_mtime_ns
    except OSError:
        return {}
    if fresh or pool not in _listed or _listed[pool][0] != stamp:
        _listed[pool] = (stamp, pool_coverage(pool))
    return _listed[pool][1]


def quarantine(run, kind: str, sid: str, reason: str) -> None:
    """Make a damaged stage not done: DONE -> DONE.damaged, DAMAGED says why,
    and the done index forgets it (in this order: a kill in between leaves a
    stage not done, which is what it is)."""
    folder = run.stage(kind, sid)
    state.write_json(folder / "DAMAGED", {"reason": reason, "time": time.time()})
    if (folder / "DONE").exists():
        os.replace(folder / "DONE", folder / "DONE.damaged")
    try:
        DoneIndex(run.done_index).forget({sid: reason})
    except OSError:
        pass  # an index this user cannot write: its readers see DONE gone


def damaged(folder: Path) -> str | None:
    """What DAMAGED says of a stage not done since, or None."""
    path = Path(folder) / "DAMAGED"
    if not path.exists() or state.is_done(folder):
        return None
    try:
        return json.loads(path.read_bytes())["reason"]
    except (OSError, ValueError, KeyError, TypeError):
        return "DAMAGED does not parse"


def before_reading(run, plan, done: set[str], unreadable: dict[str, str],
                   evaluations_read: bool) -> dict[str, str]:
    """A launch's check, under its lock: the stages whose DONE did not parse
    (`unreadable`, from index.done_ids), the done inputs of stages about to
    run, and the done evaluations where the analysis is about to read them,
    each damaged one quarantined and taken out of `done`. {id: why}."""
    kind_of = {s.id: s.kind for s in plan.stages}
    found = {}
    for sid, kind in unreadable.items():
        found[sid] = check(run.stage(kind, sid)) or "DONE does not parse"
    about = {i for s in plan.stages if s.id not in done for i in s.inputs if i in done}
    if evaluations_read:
        about |= {s.id for s in plan.of_kind("evaluate") if s.id in done}
    for sid in sorted(about - set(found)):
        why = check(run.stage(kind_of[sid], sid))
        if why:
            found[sid] = why
    for sid, why in found.items():
        quarantine(run, kind_of.get(sid) or unreadable[sid], sid, why)
        done.discard(sid)
    return found


def current_digest(folder: Path) -> str | None:
    """The digest of a done stage's outputs as its DONE lists them now; None
    while it is not done (or its DONE does not parse)."""
    try:
        return digest(read_done(folder).get("outputs", {})) if state.is_done(folder) else None
    except ValueError:
        return None


def redone_input(reader: Path, now, kind_of: dict[str, str]) -> str | None:
    """Why the done stage in `reader` is stale, or None: the first input whose
    digest now (`now(id)`; None where not known) is not the one it read."""
    for i, read in sorted(read_done(reader).get("inputs", {}).items()):
        current = now(i)
        if current is not None and current != read:
            return f"input {kind_of[i]}/{i} was redone with other outputs than this stage read"
    return None


def stale_readers(run, plan, redone: set[str]) -> dict[str, str]:
    """Done stages that read a stage of `redone` whose outputs are now not
    what they read (its DONE's digest against theirs), each quarantined:
    {id: why}. Readers of a stage redone bit for bit stay done."""
    kind_of = {s.id: s.kind for s in plan.stages}
    now = {i: current_digest(run.stage(kind_of[i], i)) for i in redone}
    found = {}
    for s in plan.stages:
        folder = run.stage(s.kind, s.id)
        if not now.keys() & set(s.inputs) or not state.is_done(folder):
            continue
        why = redone_input(folder, now.get, kind_of)
        if why:
            found[s.id] = why
            quarantine(run, s.kind, s.id, why)
    return found
