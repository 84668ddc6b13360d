"""Stage runners: one self-contained module per kind, each with `VERSION`
(part of every stage id: bump it when a change alters outputs) and
`run(ctx)`. Heavy libraries are imported inside `run` only, so planning and
status stay fast on a login node."""
from __future__ import annotations

import importlib

from synscale.plan.graph import KINDS


def runner(kind: str):
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}; known: {', '.join(KINDS)}")
    return importlib.import_module(f"synscale.stages.{kind}")


def runner_versions() -> dict[str, str]:
    """Each kind's VERSION, read from its module: the one place to bump it.
    The modules import their heavy libraries inside `run`, so this is cheap."""
    return {kind: runner(kind).VERSION for kind in KINDS}
