"""Stages and the plan that orders them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

# In data-flow order: caption (real images -> captions, for IN-Captions prompts)
# feeds generate.
KINDS = ("caption", "generate", "pack", "curate", "train", "evaluate")


@dataclass(frozen=True)
class Stage:
    id: str                  # content hash (hashing.stage_id)
    kind: str                # one of KINDS
    spec: dict               # everything the runner needs besides its inputs
    inputs: tuple = ()       # ids of the stages whose folders it reads
    axes: dict = field(default_factory=dict)  # sweep coordinates, for gathering results
    # further coordinates the same work answers: a curated set can be, say, both a blend
    # and a leave-one-out pool; it is planned (and run) once and reported under each
    also: tuple = ()
    # what readers hash (hashing.content_id): "" where it is the id; a generation chunk's
    # is its config's, a pack's its content at any size
    content: str = ""

    @property
    def content_key(self) -> str:
        return self.content or self.id


@dataclass
class Plan:
    study: str
    stages: list[Stage]

    def __post_init__(self) -> None:
        self.by_id = {s.id: s for s in self.stages}

    def of_kind(self, kind: str) -> list[Stage]:
        return [s for s in self.stages if s.kind == kind]

    def order(self) -> list[Stage]:
        """Stages with every input before its readers (the plan is built that way;
        this re-checks it, since a backend relies on it)."""
        seen: set[str] = set()
        for s in self.stages:
            missing = [i for i in s.inputs if i not in seen]
            if missing:
                raise ValueError(f"stage {s.kind}/{s.id} reads {missing} before they are planned")
            seen.add(s.id)
        return list(self.stages)

    def downstream(self, ids: set[str]) -> set[str]:
        """Every stage that reads, directly or not, one of `ids`."""
        out: set[str] = set()
        for s in self.stages:
            if any(i in ids or i in out for i in s.inputs):
                out.add(s.id)
        return out

    def to_json(self) -> str:
        """One stage per line: json's C encoder writes each (an indented dump
        runs its pure-Python one, ~10x slower at 10^5 stages), and a stage is
        one grep away. Shallow: asdict would deep-copy every spec first."""
        encode, names = json.JSONEncoder(sort_keys=True).encode, [f.name for f in fields(Stage)]
        rows = ",\n".join(encode({n: getattr(s, n) for n in names
                                  if n != "content" or s.content}) for s in self.stages)
        return f'{{"study": {json.dumps(self.study)}, "stages": [\n{rows}\n]}}\n'

    @classmethod
    def from_json(cls, text: str) -> Plan:
        raw = json.loads(text)
        stages = [Stage(s["id"], s["kind"], s["spec"], tuple(s["inputs"]), s.get("axes", {}),
                        tuple(s.get("also", ())), s.get("content", ""))
                  for s in raw["stages"]]
        return cls(raw["study"], stages)
