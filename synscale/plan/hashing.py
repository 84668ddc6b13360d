"""Stage identity: a short hash of what can change a stage's result.

Like dora's experiment signatures: the canonical (sorted-key JSON) spec, the
content ids of the stages it reads and the runner's version string. Keys
that cannot change a result are dropped by name before hashing, so tuning
them never reruns finished work: everywhere (EXCLUDED_KEYS) or for one kind
(LAYOUT_KEYS: how its work is cut, stored or scheduled).

A stage also has a content id: its id without the keys that say how much of
a content it holds (SIZE_KEYS: a generation chunk's class and index range,
a pack's or a curation's rows per class). Readers hash that, so a training
of n images per class of a generation config keeps its id when the config
grows to more images or is cut into other chunks (DESIGN.md, "Identity is
content").
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
# Top-level keys of one kind's spec that say how its work is cut or stored. A
# generation's batch_size is here for the reason micro_batch_size is above: it moves
# images in their last float bits (plan/batches.py), not what they show.
LAYOUT_KEYS = {"generate": frozenset({"batch_size", "shard_images"})}
# Top-level keys of one kind's spec that say how much of its content a stage holds.
SIZE_KEYS = {"generate": frozenset({"classes", "indices"}), "caption": frozenset({"classes"}),
             "pack": frozenset({"per_class"}), "curate": frozenset({"per_class"})}


# One encoder for every call: json.dumps with options builds a new one each time.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_string = json.encoder.encode_basestring_ascii  # what that encoder writes for a str


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in EXCLUDED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def canonical(value: Any, memo: dict | None = None, drop: frozenset = frozenset()) -> str:
    """Sorted-key compact JSON of `value` less the excluded keys. With `memo`
    (a {} kept for one planning), the text of each dict inside `value` is made
    once and found again by identity: a plan's specs share the recipe, the
    model and the data spec, and a 10^6-stage plan would encode them 10^6
    times. Those dicts must not change while the memo is in use. `drop`: more
    top-level keys to leave out."""
    if drop and type(value) is dict:
        value = {k: v for k, v in value.items() if k not in drop}
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
             memo: dict | None = None, drop: frozenset = frozenset()) -> str:
    """`inputs`: the content ids of the stages it reads. `memo`: see `canonical`;
    the id is the same with or without it. `drop`: top-level keys left out
    besides the kind's layout keys."""
    layout = LAYOUT_KEYS.get(kind)
    if layout:
        drop = drop | layout
    if memo is None or type(kind) is not str or type(version) is not str:
        payload = canonical({"kind": kind, "spec": {k: v for k, v in spec.items()
                                                    if k not in drop},
                             "inputs": sorted(inputs), "version": version})
    else:  # the same text, keys in sorted order
        ids = ",".join([_string(i) for i in sorted(inputs)])
        payload = (f'{{"inputs":[{ids}],"kind":{_string(kind)},'
                   f'"spec":{canonical(spec, memo, drop)},"version":{_string(version)}}}')
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def content_id(kind: str, spec: dict, inputs: Iterable[str], version: str,
               memo: dict | None = None) -> str:
    """What readers of the stage hash: its id without its size keys (the same
    as its id for a kind that has none)."""
    return stage_id(kind, spec, inputs, version, memo, SIZE_KEYS.get(kind, frozenset()))


def image_seed(study_seed: int, class_index: int, image_index: int) -> int:
    """Per-image seed from (study seed, class, index): independent of sharding,
    so a re-rendered shard is bit-identical."""
    digest = hashlib.sha256(f"{study_seed}:{class_index}:{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
