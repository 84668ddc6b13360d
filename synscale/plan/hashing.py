"""Stage identity: a short hash of what can change a stage's result.

Like dora's experiment signatures: the canonical (sorted-key JSON) spec, the
ids of the stages it reads and the runner's version string. Keys that cannot
change a result are dropped by name before hashing, so tuning them never
reruns finished work.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

# Keys anywhere in a spec that never change a stage's outputs.
# micro_batch_size splits the same global batch into accumulated pieces: like
# the number of tasks (not in any spec), it changes float rounding, not results.
EXCLUDED_KEYS = frozenset({"log_every", "checkpoint_every", "loader_workers", "workers",
                           "description", "micro_batch_size", "release_inputs"})


# One encoder for every call: json.dumps with options builds a new one each time.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_string = json.encoder.encode_basestring_ascii  # what that encoder writes for a str


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in EXCLUDED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def canonical(value: Any, memo: dict | None = None) -> str:
    """Sorted-key compact JSON of `value` less the excluded keys. With `memo`
    (a {} kept for one planning), the text of each dict inside `value` is made
    once and found again by identity: a plan's specs share the recipe, the
    model and the data spec, and a 10^6-stage plan would encode them 10^6
    times. Those dicts must not change while the memo is in use."""
    if memo is None or type(value) is not dict:
        return _encode(_strip(value))
    try:  # what the encoder writes for a dict, put together here from its parts
        return "{" + ",".join([f"{_string(k)}:{_part(value[k], memo)}" for k in sorted(value)
                               if k not in EXCLUDED_KEYS]) + "}"
    except TypeError:  # a key that is not a str: the encoder's own rules for it
        return _encode(_strip(value))


def _part(value: Any, memo: dict) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int:  # exactly: bool is a subclass, and is written true or false
        return int.__repr__(value)
    if kind is dict:
        hit = memo.get(id(value))
        if hit is None:  # keeps `value` alive, so that no other dict gets its id
            hit = memo[id(value)] = (value, _encode(_strip(value)))
        return hit[1]
    return _encode(_strip(value))


def stage_id(kind: str, spec: dict, inputs: Iterable[str], version: str,
             memo: dict | None = None) -> str:
    """`memo`: see `canonical`; the id is the same with or without it."""
    if memo is None or type(kind) is not str or type(version) is not str:
        payload = canonical({"kind": kind, "spec": spec, "inputs": sorted(inputs),
                             "version": version})
    else:  # the same text, keys in sorted order
        ids = ",".join([_string(i) for i in sorted(inputs)])
        payload = (f'{{"inputs":[{ids}],"kind":{_string(kind)},'
                   f'"spec":{canonical(spec, memo)},"version":{_string(version)}}}')
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def image_seed(study_seed: int, class_index: int, image_index: int) -> int:
    """Per-image seed from (study seed, class, index): independent of sharding,
    so a re-rendered shard is bit-identical."""
    digest = hashlib.sha256(f"{study_seed}:{class_index}:{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
