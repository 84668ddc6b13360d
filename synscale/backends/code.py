"""Code pinned at submission: a Slurm job runs the synscale it was submitted with.

A queued job starts minutes or days after `launch`. Importing synscale from
the checkout then would run whatever the checkout holds at that moment, under
stage ids computed from the code of the launch. So a Slurm launch copies the
package, content addressed, to runs/<study>/code/<hash>/synscale/ and every
job imports that copy (slurm._executor). code.json beside the copy says what
it is: the hash, each file's hash, the git commit of the checkout it came from
and whether the package differed from that commit. Each stage's DONE carries
that record (runtime.harness.execute; the local backend records the checkout it runs
from, uncopied), and a relaunch says which stages were submitted or computed
with other code than the checkout's (`changes`): their ids do not show it,
since an id hashes a runner's VERSION, not its source.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the synscale this process imported
# Every stage runs these besides its runner (and what they import).
COMMON = ("synscale.backends.worker",)


@dataclass(frozen=True)
class Code:
    hash: str                 # sha256 of the file list and contents, 16 hex digits
    folder: str               # where `import synscale` resolves: the copy's parent, or the checkout
    commit: str | None        # git HEAD of the checkout the files came from; None: see `git`
    dirty: bool | None        # the package differed from that commit (git status)
    git: str = ""             # why commit is None; empty when it is known
    pinned: bool = False      # a copy under a run directory, not a checkout
    files: dict = field(default_factory=dict, repr=False)  # "synscale/..." -> sha256

    def record(self) -> dict:
        """What a stage's DONE carries: all but the file list."""
        return {k: v for k, v in asdict(self).items() if k != "files"}


def _wanted(path: Path) -> bool:
    # Bytecode is rebuilt per interpreter, and dot files are editor or temp leftovers.
    return not any(p == "__pycache__" or p.startswith(".") for p in path.parts) \
        and path.suffix != ".pyc"


_SHA: dict[tuple, str] = {}  # (path, size, mtime, inode) -> sha256: a relaunch re-reads nothing


def _sha(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _SHA:
        _SHA[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _SHA[key]


def _digest(files: dict[str, str]) -> str:
    lines = "".join(f"{rel}\0{sha}\n" for rel, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _listing(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*")
                  if p.is_file() and _wanted(p.relative_to(package)))


def _git(checkout: Path, package: str) -> tuple[str | None, bool | None, str]:
    """(commit, dirty, why unknown): never raises; git may be absent."""
    def git(*args):
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                              text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            why = (head.stderr.strip().splitlines() or ["git rev-parse failed"])[0]
            return None, None, f"no git commit for {checkout}: {why}"
        status = git("status", "--porcelain", "--", package)
    except FileNotFoundError:
        return None, None, "git is not installed"
    except (OSError, subprocess.SubprocessError) as e:
        return None, None, f"git failed: {e}"
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip(), dirty, "" if dirty is not None else status.stderr.strip()


def _hashes(package: Path) -> dict[str, str]:
    return {f"{package.name}/{p.relative_to(package).as_posix()}": _sha(p)
            for p in _listing(package)}


def identify(package: Path = PACKAGE) -> Code:
    """The code in `package`, as it is now, without copying it."""
    package = Path(package).resolve()
    files = _hashes(package)
    return Code(_digest(files), str(package.parent), *_git(package.parent, package.name),
                files=files)


def snapshot(run_root, package: Path = PACKAGE) -> Code:
    """The copy of `package` under <run_root>/code/, made now unless one with
    the same content exists. Copied to a temporary folder, then renamed: a
    folder named by a hash always holds all of that content."""
    package = Path(package).resolve()
    code_dir = Path(run_root).resolve() / "code"
    folder = code_dir / _digest(_hashes(package))  # stat-cached: cheap when it exists
    if not folder.exists():
        code_dir.mkdir(parents=True, exist_ok=True)
        for old in code_dir.glob(".tmp-*"):  # a killed launch's; an hour is no live copy
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        tmp = code_dir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        files = {}
        for p in _listing(package):
            rel = f"{package.name}/{p.relative_to(package).as_posix()}"
            data = p.read_bytes()  # hashed as copied: an edit meanwhile cannot split them
            files[rel] = hashlib.sha256(data).hexdigest()
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        now = Code(_digest(files), "", *_git(package.parent, package.name), files=files)
        folder = code_dir / now.hash
        (tmp / "code.json").write_text(json.dumps(
            {**asdict(now), "folder": str(folder), "pinned": True, "source": str(package),
             "created": time.time()}, indent=1, sort_keys=True))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process made the same copy first
            shutil.rmtree(tmp, ignore_errors=True)
    return load(folder)


def load(folder: Path) -> Code:
    raw = json.loads((Path(folder) / "code.json").read_text())
    # where it is now, should the run directory have moved
    return Code(**{**{k: raw[k] for k in Code.__dataclass_fields__},
                   "folder": str(Path(folder).resolve())})


@functools.cache
def running() -> dict:
    """The record of the code this process runs: its pinned copy, or the
    checkout it imported (the local backend), hashed once per process."""
    meta = PACKAGE.parent / "code.json"
    return (load(PACKAGE.parent) if meta.is_file() else identify(PACKAGE)).record()


# -- which stages a change touches ------------------------------------------

def _module_file(folder: Path, name: str) -> str | None:
    base = name.replace(".", "/")
    for rel in (f"{base}.py", f"{base}/__init__.py"):
        if (folder / rel).is_file():
            return rel
    return None


def _imports(folder: Path, rel: str) -> set[str]:
    """The synscale modules `rel` imports anywhere in it (runners import
    inside functions), with their parent packages, which importing runs."""
    try:
        tree = ast.parse((folder / rel).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return set()  # a broken file fails its job; it need not fail the launch
    # "." is the package a module is in: a/ for a/b.py, a/b/ for a/b/__init__.py
    package = rel[:-3].split("/")[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] +
                            ([node.module] if node.module else [])) if node.level \
                else node.module or ""
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}  # the name may be a module
    out = set()
    for name in names:
        bits = name.split(".")
        if bits[0] == "synscale":
            out |= {".".join(bits[:i]) for i in range(1, len(bits) + 1)}
    return out


def closure(folder: Path, modules) -> set[str]:
    """Files under `folder` that importing `modules` can run, found statically."""
    def files(names):
        return [f for f in (_module_file(folder, name) for name in names) if f]

    parents = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)}
    seen: set[str] = set()
    todo = files(parents)
    while todo:
        rel = todo.pop()
        if rel not in seen:
            seen.add(rel)
            todo += files(_imports(folder, rel))
    return seen


def _package_of(folder: Path, rel: str) -> str:
    """The folder of the package a data file belongs to (weights, prompt lists)."""
    for parent in Path(rel).parents:
        if (folder / parent / "__init__.py").exists():
            return parent.as_posix()
    return ""


def _touches(folder: Path, kind: str, changed: set[str]) -> set[str]:
    """The changed files a `kind` stage runs: modules it imports, and data
    files of a package one of them is in."""
    files = closure(folder, (f"synscale.stages.{kind}", *COMMON))
    dirs = {Path(f).parent.as_posix() for f in files}
    return {f for f in changed if f in files
            or (not f.endswith(".py") and _package_of(folder, f) in dirs)}


def stages_file(run_root) -> Path:
    return Path(run_root).resolve() / "code" / "stages.json"


def remember(run_root, code: Code, submitted: list[str]) -> None:
    """Record that `submitted` stages run `code` (read by the next `changes`)."""
    if submitted:
        from synscale.plan import state
        path = stages_file(run_root)
        known = state.read_json(path) if path.exists() else {}
        known.update(dict.fromkeys(submitted, code.hash))
        state.write_json(path, known)


def changes(run_root, code: Code, kind_of: dict[str, str], queued: list[str],
            done: list[str]) -> dict:
    """How the stages recorded with other code differ from `code`:
    {"changed_files": [...], "kinds": {kind: {"queued": n, "done": n, "files": [...]}}}.
    Only stages submitted through `remember` are compared: reading every
    DONE would not scale to a million stages."""
    path = stages_file(run_root)
    known = json.loads(path.read_text()) if path.exists() else {}
    changed_files: set[str] = set()
    counts: dict[str, dict] = {}
    touched: dict[str, set[str]] = {}
    seen: dict[tuple[str, str], tuple[set[str], set[str]]] = {}  # (old hash, kind) -> compared
    for what, ids in (("queued", queued), ("done", done)):
        for sid in ids:
            old, kind = known.get(sid), kind_of.get(sid)
            if old is None or old == code.hash or kind is None:
                continue
            if (old, kind) not in seen:
                seen[old, kind] = _compare(run_root, old, code, kind)
            diff, files = seen[old, kind]
            changed_files |= diff
            if files:
                counts.setdefault(kind, {"queued": 0, "done": 0})[what] += 1
                touched.setdefault(kind, set()).update(files)
    kinds = {k: {**c, "files": sorted(touched[k])} for k, c in counts.items()}
    return {"hash": code.hash, "changed_files": sorted(changed_files), "kinds": kinds}


def _compare(run_root, old: str, code: Code, kind: str) -> tuple[set[str], set[str]]:
    """(files that differ between snapshot `old` and `code`, those a `kind` stage runs)."""
    folder = Path(run_root).resolve() / "code" / old
    try:
        before = load(folder)
    except (OSError, ValueError, TypeError, KeyError):
        return set(), set()  # its copy was deleted: nothing to compare with
    diff = {f for f in set(before.files) | set(code.files)
            if before.files.get(f) != code.files.get(f)}
    # what the stage ran, and what it would run now (an import added or removed)
    return diff, _touches(folder, kind, diff) | _touches(Path(code.folder), kind, diff)


def message(change: dict) -> str | None:
    """One paragraph for the launch output; None when nothing differs."""
    if not change["changed_files"]:
        return None
    files = change["changed_files"]
    shown = ", ".join(files[:6]) + (f", and {len(files) - 6} more" if len(files) > 6 else "")
    parts = []
    for kind, c in change["kinds"].items():
        if c["queued"]:
            parts.append(f"{c['queued']} queued {kind} stages keep the code they were "
                         "submitted with")
        if c["done"]:
            parts.append(f"{c['done']} done {kind} stages were computed with the old code "
                         "(their ids are unchanged; bump the runner VERSION to recompute them)")
    return (f"code changed since the last launch ({shown}): "
            + ("; ".join(parts) if parts else "no recorded stage runs these files") + ".")


def after_submission(run_root, code: Code, kind_of: dict[str, str], sub) -> dict:
    """What `launch` reports and keeps: how the stages a submission left as
    they were (queued, done) differ from `code`, plus `code`'s own record;
    then the stages it submitted are recorded as running `code`."""
    change = changes(run_root, code, kind_of, sub.skipped_live, sub.skipped_done)
    remember(run_root, code, sub.submitted)
    return {**code.record(), **change, "message": message(change)}
