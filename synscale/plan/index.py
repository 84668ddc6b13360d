"""Finished stages, summarized once: runs/<study>/index/done.jsonl.

A finished stage never changes again, yet status needs its start and end and
launch needs to know it is done; reading its folder on every refresh makes a
refresh grow with the run. So the first reader that finds a stage's DONE
(status or launch) appends one line, {"id", "kind", "started", "finished"},
and later readers skip that stage's folder.

Safe under kill -9 at any byte: a line counts only once its newline is
written, so readers ignore a torn last line, and the next writer cuts it off
before appending (writers hold an flock on the file, so they never
interleave). A line is written only after the stage's DONE was read, and
duplicates are harmless. The index is a cache of the DONE files: deleting it
is always safe (the next refresh rebuilds it), and it is how to make a stage
whose folder was removed by hand count as not done again.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class Finished(NamedTuple):
    kind: str
    started: float | None   # attempt.json's start; None where the stage has none
    finished: float         # DONE's time


def summarize(folder: Path, kind: str) -> Finished | None:
    """A done stage's index entry, from its DONE (None while there is none)."""
    try:
        finished = float(json.loads((folder / "DONE").read_bytes())["finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        started = float(json.loads((folder / "attempt.json").read_bytes())["started"])
    except (OSError, ValueError, KeyError, TypeError):
        started = None
    return Finished(kind, started, finished)


class DoneIndex:
    """One reader's view of the index; `read` again returns what was added since."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0         # bytes of whole lines read so far
        self.file = None        # (device, inode) they were read from
        self.done: dict[str, Finished] = {}

    def read(self) -> dict[str, Finished]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_dev, st.st_ino) != self.file or st.st_size < self.offset:
                    # deleted (and begun again) since the last read: start over
                    self.offset, self.file, self.done = 0, (st.st_dev, st.st_ino), {}
                f.seek(self.offset)
                data = f.read()
        except OSError:  # none yet, or none this user may read: no index
            self.offset, self.file, self.done = 0, None, {}
            return self.done
        whole = data.rfind(b"\n") + 1  # past it: a line still being written, or torn
        _apply(self.done, data[:whole])
        self.offset += whole
        return self.done

    def add(self, entries: dict[str, Finished]) -> None:
        """Append `entries`; an OSError (a run directory this user cannot
        write) is left to the caller, who can do without the index."""
        if not entries:
            return
        self._append("".join(json.dumps({"id": sid, "kind": f.kind, "started": f.started,
                                         "finished": f.finished}, separators=(",", ":")) + "\n"
                             for sid, f in entries.items()).encode())
        self.done.update(entries)

    def forget(self, damaged: dict[str, str]) -> None:
        """Un-do stages found damaged (plan/outputs.py): a line {"id",
        "damaged"} that later readers apply in order, so a stage done again
        afterwards is indexed again by its next line."""
        if not damaged:
            return
        self._append("".join(json.dumps({"id": sid, "damaged": why}, separators=(",", ":"))
                             + "\n" for sid, why in damaged.items()).encode())
        for sid in damaged:
            self.done.pop(sid, None)

    def _append(self, lines: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel on a kill
            size = os.fstat(fd).st_size
            whole = _whole_lines(fd, size)
            if whole < size:  # a writer was killed mid-line: drop the fragment
                os.ftruncate(fd, whole)
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def _whole_lines(fd: int, size: int, block: int = 4096) -> int:
    """Bytes of `fd` up to and including its last newline."""
    end = size
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _apply(done: dict[str, Finished], data: bytes) -> None:
    """Fold index lines into `done`, in order (a "damaged" line un-does)."""
    lines = [line for line in data.split(b"\n") if line.strip()]
    try:  # one call to the C parser, for the lines this module writes
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        records = []
        for line in lines:  # something else is in there: take the lines that read
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    for r in records:
        try:
            if "damaged" in r:
                done.pop(r["id"], None)
                continue
            started = None if r["started"] is None else float(r["started"])
            done[r["id"]] = Finished(r["kind"], started, float(r["finished"]))
        except (TypeError, KeyError, ValueError):
            continue


def done_ids(run, stages: Iterable[tuple[str, str]], record: bool = True,
             index: DoneIndex | None = None, unreadable: dict | None = None) -> set[str]:
    """Which of `stages` ((id, kind) pairs) are done: the indexed ones, and
    those with a DONE since, which are indexed now where `record`. A DONE
    that does not parse is not done (its id -> kind goes to `unreadable`,
    for the caller to quarantine: plan/outputs.py). Only the
    folders of stages not yet indexed are looked at, and only where their
    kind's folder lists them, so a fresh run directory costs one listdir
    per kind."""
    index = index or DoneIndex(run.done_index)
    known = index.read()
    done, unknown = set(), defaultdict(list)
    for sid, kind in stages:
        if sid in known:
            done.add(sid)
        else:
            unknown[kind].append(sid)
    new = {}
    for kind, ids in unknown.items():
        parent = run.kind_folder(kind)
        try:
            present = set(os.listdir(parent))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for sid in ids:
            if sid in present and os.path.exists(parent / sid / "DONE"):
                entry = summarize(parent / sid, kind)
                if entry is None:  # a DONE that does not parse: not done (plan/outputs.py)
                    if unreadable is not None:
                        unreadable[sid] = kind
                    continue
                done.add(sid)
                new[sid] = entry
    if record:
        try:
            index.add(new)
        except OSError:
            pass  # a run directory we may not write to: the index stays as it is
    return done
