"""What a run's results were fitted from, so that they are refitted only
when that changes: the finished evaluations and the study as launched (its
[analysis] keys). results/inputs.json holds the digest.

Kept free of the fitting libraries (scipy, matplotlib), since `launch` and
`status` ask on every call whether results are current: the finished
evaluations come from the done index, not from every evaluation's folder.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

from synscale.plan import index, state
from synscale.plan.layout import RunDir


def evaluations_done(run: RunDir, stages: Iterable[tuple[str, str]]) -> list[str]:
    """The finished evaluations among `stages` ((id, kind) pairs)."""
    evaluations = [(sid, kind) for sid, kind in stages if kind == "evaluate"]
    return sorted(index.done_ids(run, evaluations))


def digest(run: RunDir, evaluations: Iterable[str]) -> str:
    h = hashlib.sha256(run.study_file.read_bytes() if run.study_file.exists() else b"")
    for sid in sorted(evaluations):
        h.update(sid.encode())
    return h.hexdigest()[:16]


def current(run: RunDir, evaluations: Iterable[str]) -> bool:
    try:
        recorded = state.read_json(run.results / "inputs.json")["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == digest(run, evaluations)


def stale(run: RunDir) -> bool:
    """Whether results/ were fitted from other evaluations (or another study)
    than the run's finished ones now: one read of the done index."""
    from synscale.plan import stored
    listed = stored.load_stages(run)
    return not current(run, evaluations_done(run, zip(listed.ids, listed.kinds)))


def record(run: RunDir, evaluations: Iterable[str]) -> None:
    state.write_json(run.results / "inputs.json", {"digest": digest(run, evaluations)})
