"""Stage state on disk: atomic writes, DONE markers, run records and locks.

A stage is done exactly when its DONE file exists. A done stage may be
released (RELEASED beside DONE): its bulk outputs were deleted once every
stage reading them was done ([generate] keep_shards = false); it still
counts as done, and runs again only for a stage that needs it.
Everything is written to
a temporary name in the same folder and renamed into place, so a kill at any
moment leaves either the old file or the whole new one, never half of one.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process's umask, read
    without changing it (/proc; os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it, give it the umask's mode
    (some writers, safetensors' among them, make their files 0600, which a
    colleague in the group cannot read) and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class DamagedFile(ValueError):
    """A JSON file the run wrote that does not parse: the message names the
    file, the stage that wrote it and how to have it redone."""


def read_json(path: Path) -> Any:
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(data)
    except ValueError as e:
        stage = ""
        if len(path.parents) > 3 and path.parents[2].name == "stages":
            run = path.parents[3]
            stage = (f" (written by stage {path.parents[1].name}/{path.parent.name}: "
                     f"python -m synscale.verify {run} --deep marks it damaged, and a "
                     "launch then redoes it)")
        raise DamagedFile(f"{path}: not valid JSON ({e.__class__.__name__}: {e}; "
                          f"{len(data)} bytes){stage}") from None


def clean_temporaries(folder: Path) -> None:
    """Drop leftovers of a killed attempt: they were never renamed, so never counted."""
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)


def is_done(folder: Path) -> bool:
    return (Path(folder) / "DONE").exists()


def is_released(folder: Path) -> bool:
    return (Path(folder) / "RELEASED").exists()


def release(folder: Path, files: list[Path], why: str) -> int:
    """Mark a done stage released, then delete `files`, its outputs (the marker
    first: a kill in between leaves a released stage with some files, which a
    rerun completes). Returns the bytes freed."""
    folder = Path(folder)
    files = [f for f in files if f.exists()]
    freed = sum(f.stat().st_size for f in files)
    write_json(folder / "RELEASED", {"released": time.time(), "why": why, "bytes": freed})
    for f in files:
        f.unlink(missing_ok=True)
    return freed


def needed_again(plan, run) -> set[str]:
    """Released stages that a stage not done reads: they run again. One stat
    per generate stage (the only kind released), and one per stage reading a
    released one."""
    released = {s.id for s in plan.of_kind("generate")
                if is_released(run.stage(s.kind, s.id))}
    if not released:
        return set()
    return {i for s in plan.stages if released.intersection(s.inputs)
            and not is_done(run.stage(s.kind, s.id)) for i in s.inputs if i in released}


def mark_done(folder: Path, summary: dict) -> None:
    """DONE, last; then what said an earlier attempt's outputs were damaged
    (plan/outputs.py) goes."""
    write_json(Path(folder) / "DONE", {"finished": time.time(), **summary})
    for old in ("DAMAGED", "DONE.damaged"):
        (Path(folder) / old).unlink(missing_ok=True)


def record_attempt(folder: Path) -> None:
    """Who is running this stage now; status uses it to tell running from pending."""
    for old in ("error.json", "exit.json", "DAMAGED"):  # this attempt's outcome says now
        (Path(folder) / old).unlink(missing_ok=True)
    write_json(Path(folder) / "attempt.json",
               {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def record_failure(folder: Path, error: BaseException, tb: str,
                   klass: str = "python exception", message: str = "") -> None:
    """error.json: the failure class the stage itself could tell (failures.py)
    and the traceback's last line, or a better message where there is one."""
    last = tb.strip().splitlines()[-1] if tb.strip() else repr(error)
    write_json(Path(folder) / "error.json",
               {"error": message or last, "class": klass, "traceback": tb, "time": time.time(),
                "pid": os.getpid()})


def attempt_alive(folder: Path) -> bool | None:
    """Whether the process of the stage's latest attempt runs: True or False
    when it ran on this host (its pid says), None when on another host (only
    its heartbeat can tell) or when there is no attempt record."""
    path = Path(folder) / "attempt.json"
    try:
        rec = read_json(path)
    except (OSError, ValueError):
        return None
    if rec.get("host") != socket.gethostname():
        return None
    try:
        os.kill(rec["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process under that pid: ours is gone
        return False
    return True


# A dead stage on another host is noticed within 3 periods (30 s).
HEARTBEAT_SECONDS = 10.0


def start_heartbeat(folder: Path) -> Callable[[], None]:
    """Touch <folder>/heartbeat every HEARTBEAT_SECONDS until the returned stop()
    is called: a stage's sign of life that any host sharing the folder sees."""
    import threading

    path = Path(folder) / "heartbeat"
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            path.touch()
            stop.wait(HEARTBEAT_SECONDS)

    threading.Thread(target=beat, daemon=True, name="heartbeat").start()
    return stop.set


def heartbeat_fresh(folder: Path, now: float | None = None) -> bool:
    """A beat within three periods: the stage's process is alive somewhere."""
    try:
        age = (now or time.time()) - (Path(folder) / "heartbeat").stat().st_mtime
    except OSError:
        return False
    return age < 3 * HEARTBEAT_SECONDS


class Locked(RuntimeError):
    pass


@contextmanager
def exclusive(path: Path, describe: Callable[[], str] = lambda: "") -> Iterator[None]:
    """An flock held for the block's lifetime; the kernel drops it when the
    holder dies, so a killed launch never leaves a stale lock behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip()
            raise Locked(f"{path.parent} is in use by another launch ({holder or 'unknown pid'})"
                         f"{describe()}; wait for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        os.close(fd)
