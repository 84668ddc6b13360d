"""The plan on disk: plan.json, written only when the plan changed, and
index/stages.tsv, each stage's id and kind, which status reads instead.

plan.json of a 10^5-stage study is tens of megabytes: writing it on every
launch and parsing it on every status refresh cost seconds each. The stage
list's first line records a digest of the plan and plan.json's size, so a
relaunch that plans the same stages compares one digest and writes nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass

from synscale.plan import state
from synscale.plan.graph import Plan
from synscale.plan.layout import RunDir


def digest(plan: Plan) -> str:
    """A digest of everything plan.json holds. Pickle, because it writes a
    dict shared by many stages once (the JSON text is 7x longer and 4x slower
    to make); the same planning gives the same bytes, and a plan that differs
    only in key order or sharing just gets written again."""
    rows = [(s.id, s.kind, s.spec, s.inputs, s.axes, s.also, s.content) for s in plan.stages]
    return hashlib.sha256(pickle.dumps((plan.study, rows), protocol=5)).hexdigest()


def write_plan(run: RunDir, plan: Plan) -> bool:
    """Write plan.json and the stage list unless they already hold this plan;
    True when written. plan.json goes first: a kill between the two leaves an
    old digest, so the next launch writes both again."""
    fingerprint = digest(plan)
    head = _header(run)
    if head.get("digest") == fingerprint and head.get("plan_bytes") == _size(run.plan_file):
        return False
    text = plan.to_json().encode()
    with state.atomic_path(run.plan_file) as tmp:
        tmp.write_bytes(text)
    header = {"study": plan.study, "digest": fingerprint, "plan_bytes": len(text),
              "stages": len(plan.stages)}
    rows = "".join(f"{s.id}\t{s.kind}\n" for s in plan.stages)
    state.write_text(run.stage_list, json.dumps(header) + "\n" + rows)
    return True


@dataclass
class StageList:
    study: str
    ids: list[str]
    kinds: list[str]
    stamp: tuple    # what it was read from, and that file's identity and size at the time


def load_stages(run: RunDir, known: StageList | None = None) -> StageList:
    """Each stage's (id, kind), from the stage list; `known` again where its
    file has not changed since. Falls back to parsing plan.json where the
    list is missing or is not plan.json's (run directories from before it,
    plans written by other tools)."""
    head_stamp = _stamp(run.stage_list)
    if known is not None and head_stamp is not None and known.stamp == head_stamp:
        return known
    listed = _read_list(run) if head_stamp is not None else None
    if listed is not None:
        return StageList(*listed, head_stamp)
    plan_stamp = _stamp(run.plan_file)
    if known is not None and known.stamp == plan_stamp:
        return known
    plan = Plan.from_json(run.plan_file.read_text())
    return StageList(plan.study, [s.id for s in plan.stages], [s.kind for s in plan.stages],
                     plan_stamp)


def _read_list(run: RunDir):
    try:
        text = run.stage_list.read_text()
    except OSError:
        return None
    first, _, body = text.partition("\n")
    try:
        head = json.loads(first)
    except ValueError:
        return None
    pairs = [line.split("\t") for line in body.splitlines()]
    if (not isinstance(head, dict) or "study" not in head or len(pairs) != head.get("stages")
            or any(len(p) != 2 for p in pairs) or head.get("plan_bytes") != _size(run.plan_file)):
        return None  # not ours, or plan.json was written without it
    return head["study"], [p[0] for p in pairs], [p[1] for p in pairs]


def _header(run: RunDir) -> dict:
    try:
        with open(run.stage_list) as f:
            head = json.loads(f.readline())
    except (OSError, ValueError):
        return {}
    return head if isinstance(head, dict) else {}


def _size(path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _stamp(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
