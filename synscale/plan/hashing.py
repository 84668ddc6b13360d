"""Stage identity: a short hash of what can change a stage's result.

Like dora's experiment signatures: the canonical (sorted-key JSON) spec, the
ids of the stages it reads and the runner's version string. Keys that cannot
change a result are dropped by name before hashing, so tuning them never
reruns finished work.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

# Keys anywhere in a spec that never change a stage's outputs.
# micro_batch_size splits the same global batch into accumulated pieces: like
# the number of tasks (not in any spec), it changes float rounding, not results.
EXCLUDED_KEYS = frozenset({"log_every", "checkpoint_every", "loader_workers", "workers",
                           "description", "micro_batch_size"})


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in EXCLUDED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def canonical(value: Any) -> str:
    return json.dumps(_strip(value), sort_keys=True, separators=(",", ":"))


def stage_id(kind: str, spec: dict, inputs: Iterable[str], version: str) -> str:
    payload = canonical({"kind": kind, "spec": spec, "inputs": sorted(inputs),
                         "version": version})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def image_seed(study_seed: int, class_index: int, image_index: int) -> int:
    """Per-image seed from (study seed, class, index): independent of sharding,
    so a re-rendered shard is bit-identical."""
    digest = hashlib.sha256(f"{study_seed}:{class_index}:{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
