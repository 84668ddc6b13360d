"""Where things live in a run directory (the only channel between stages).

runs/<study>/
  study.toml, plan.json         the study as launched and its expanded plan
  index/stages.tsv              each stage's id and kind, for status (plan.json is large)
  index/done.jsonl              finished stages, appended once each (plan/index.py)
  stages/<kind>/<id>/           one folder per stage; DONE is written last
  results/                      metrics.csv, fits.json, summary.md, plots
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def study_file(self) -> Path:
        return self.root / "study.toml"

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

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

    def stage(self, kind: str, stage_id: str) -> Path:
        return self.root / "stages" / kind / stage_id
