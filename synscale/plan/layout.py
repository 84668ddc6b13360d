"""Where things live in a run directory (the only channel between stages).

runs/<study>/
  study.toml, plan.json         the study as launched and its expanded plan
  index/stages.tsv              each stage's id and kind, for status (plan.json is large)
  index/done.jsonl              finished stages, appended once each (plan/index.py)
  stages/<kind>/<id>/           one folder per stage; DONE is written last
  pool/<config>/                the images of one generation config, whatever chunk
                                rendered them (stages/generate.py)
  results/                      metrics.csv, fits.json, summary.md, plots
  tensorboard/<training>/       links to its stages' event files (plan/tensorboard.py)
  store.json                    with a store: where stages/ and pool/ are instead

A store (`--store DIR`, `[study] store`) holds `stages/` and `pool/` for
every run directory launched on it, content-addressed by the same ids, so a
second study, or a colleague's launch, finds shared work done (plan/store.py).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path
    store: Path | None = None  # the store it is being put on, before store.json says so

    @property
    def study_file(self) -> Path:
        return self.root / "study.toml"

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

    @classmethod
    def given(cls, path) -> RunDir | None:
        """The run directory a command was given, or None after saying on
        stderr that no launch wrote it (the command then exits 2)."""
        run = cls(Path(path))
        if run.plan_file.exists():
            return run
        print(f"error: {path}: not a run directory (no plan.json); expected runs/<study> as "
              "written by python -m synscale.launch", file=sys.stderr)
        return None

    @property
    def stage_list(self) -> Path:
        return self.root / "index" / "stages.tsv"

    @property
    def done_index(self) -> Path:
        return self.root / "index" / "done.jsonl"

    @property
    def lock_file(self) -> Path:
        return self.root / ".launch.lock"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def store_file(self) -> Path:
        return self.root / "store.json"

    @functools.cached_property
    def home(self) -> Path:
        """Where the stage folders and pools are: the store this run directory was
        launched on (store.json), or the run directory itself."""
        if self.store is not None:
            return self.store
        try:
            text = self.store_file.read_text()
        except FileNotFoundError:
            return self.root
        try:
            return Path(json.loads(text)["path"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self.store_file}: not a store record ({e}); it should hold "
                             '{"path": "<the store folder>"}') from None

    def kind_folder(self, kind: str) -> Path:
        return self.home / "stages" / kind

    def stage(self, kind: str, stage_id: str) -> Path:
        return self.home / "stages" / kind / stage_id

    def pool(self, content: str) -> Path:
        return self.home / "pool" / content


def pool_of(stage_folder: Path, content: str) -> Path:
    """A generation config's pool, beside the `stages/` that holds a stage's folder."""
    return Path(stage_folder).parents[2] / "pool" / content


def shard_path(pool: Path, c: int, first: int, count: int) -> Path:
    """The shard of class `c` holding its images [first, first + count)."""
    return Path(pool) / f"shard-{c:05d}-{first:07d}-{count:07d}.npz"


def shard_range(path: Path) -> tuple[int, int, int]:
    """(class, first index, count) of a shard (or a part), from its name."""
    _, c, first, count = Path(path).stem.split("-")
    return int(c), int(first), int(count)


def pool_coverage(pool: Path) -> dict[int, list[tuple[int, int]]]:
    """class -> the (first, stop) index ranges its shards in a pool hold, by
    first: one listing of the folder, no file opened."""
    out: dict[int, list[tuple[int, int]]] = {}
    if Path(pool).is_dir():
        for entry in os.scandir(pool):
            if entry.name.startswith("shard-") and entry.name.endswith(".npz"):
                c, first, count = shard_range(Path(entry.name))
                out.setdefault(c, []).append((first, first + count))
    return {c: sorted(r) for c, r in out.items()}
