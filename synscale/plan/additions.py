"""What could be added to a study, in its own terms: each candidate an edit
of the study file (a size beyond either end of a source's sweep, one more
seed at a size, a model width beyond either end), checked by the same
loader a launch uses, expanded into the plan it would make. The stages that
plan has and the run's does not are what the addition runs: their
evaluations are the points it would measure, their cost (plan/cost.py,
with the run's calibration when it has one) is what it costs.

An edit is one key's new value, so several combine (two sizes on one
list) and print as the lines to put in the study file.
"""
from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synscale.study.schema import SIZE_KEYS


@dataclass(frozen=True)
class Edit:
    kind: str        # "size", "repeat" or "width"
    table: str       # the study table it changes
    key: str
    value: Any       # a size or width added to the list, or the size repeated once more
    label: str

    def apply(self, raw: dict) -> None:
        t = raw.setdefault(self.table, {})
        if self.kind == "repeat":
            reps = dict(t.get("repeats", {}))
            reps[str(self.value)] = int(reps.get(str(self.value), 1)) + 1
            t["repeats"] = reps
        else:
            have = t.get(self.key, [])
            t[self.key] = sorted({*(have if isinstance(have, list) else [have]), self.value})


@dataclass
class Addition:
    edit: Edit
    error: str | None = None                    # why the study would not take it
    plan: Any = None                            # the edited study's plan
    new: list = field(default_factory=list)     # its stages the run's plan lacks
    hours: dict = field(default_factory=dict)   # {"gpu_hours", "cpu_hours"} of those stages
    redone: int = 0                             # the run's trainings it plans anew (new ids)


def edits(study) -> list[Edit]:
    """Candidate edits of a study: for each source one size past each end of
    its sweep (at the sweep's own ratio), one more seed at each size, and for
    a ViT one width past each end (a multiple of its heads)."""
    sw, out = study.sweep, []
    sizes_all: set[int] = set()
    for source in sw.sources:
        key = SIZE_KEYS[source]
        sizes = sorted(getattr(sw, key))
        sizes_all.update(sizes)
        if not sizes:
            continue
        up_ratio = sizes[-1] / sizes[-2] if len(sizes) > 1 else 2.0
        down_ratio = sizes[1] / sizes[0] if len(sizes) > 1 else 2.0
        for size in (round(sizes[-1] * up_ratio), round(sizes[0] / down_ratio)):
            if size >= 1 and size not in sizes:
                out.append(Edit("size", "sweep", key, size, f"{source} size {size}"))
    for size in sorted(sizes_all):
        out.append(Edit("repeat", "sweep", "repeats", size, f"one more seed at size {size}"))
    m = study.model
    if m.arch == "vit" and m.width:
        heads = m.heads
        for width in (max(m.width) * 2, (min(m.width) // 2) // heads * heads):
            if width >= 8 and width not in m.width:
                out.append(Edit("width", "model", "width", width, f"width {width}"))
    return out


def frozen_tables(study) -> dict:
    return tomllib.loads(study.text or Path(study.path).read_text())


def expand_all(study, planned, all_edits: list[Edit], backend: str,
               calibration: dict | None) -> list[Addition]:
    """Each edit checked and planned: the stages it adds to `planned` (the
    study's own plan) and their cost."""
    from synscale.plan import cost
    from synscale.study.expand import expand
    from synscale.study.load import StudyError, study_from_tables

    base = frozen_tables(study)
    have = {s.id for s in planned.stages}
    # an addition's images: those no chunk of the study already plans
    chunks = cost.chunk_coverage(planned.stages)
    out = []
    for e in all_edits:
        raw = copy.deepcopy(base)
        e.apply(raw)
        try:
            edited = study_from_tables(raw, study.path)
        except StudyError as err:
            out.append(Addition(e, error=err.problems[0].split(": ", 1)[-1]))
            continue
        plan = expand(edited)
        new = [s for s in plan.stages if s.id not in have]
        kinds = cost.estimate(edited, plan, backend, calibration, only={s.id for s in new},
                              covered=lambda content: chunks.get(content, {}))
        ids = {s.id for s in plan.stages}
        redone = sum(s.id not in ids for s in planned.of_kind("train"))
        out.append(Addition(e, plan=plan, new=new, hours=cost.total(kinds), redone=redone))
    return out


def lines(study, chosen: list[Edit]) -> list[str]:
    """The study-file lines that make these edits, one per key touched."""
    raw = frozen_tables(study)
    for e in chosen:
        e.apply(raw)
    touched = dict.fromkeys((e.table, "repeats" if e.kind == "repeat" else e.key) for e in chosen)
    return [f"[{table}] {key} = {_toml(raw[table][key])}" for table, key in touched]


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}"
                               for k, v in sorted(value.items(), key=lambda kv: int(kv[0]))) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
