"""The contract between the planner and the runners: one typed spec per
stage kind.

study/expand.py builds these; a stage's `spec` is the plain dict `wire()`
makes of one (what plan.json stores and hashing.stage_id hashes); a runner
reads it back through `StageContext.spec`, which calls `read()`. Reading
is strict: a key the type lacks, a field the dict lacks, or a value of the
wrong type fails before the stage does any work, naming the kind, the field
and what was expected. tests/test_spec_contract.py holds both sides to it:
every spec the shipped studies plan reads back, and every attribute a
runner reads is a field.

A field that is None is left out of the wire dict: a setting only some
studies have (scores, captions, a lossy format's quality) then changes the
ids of only the stages that use it, and a field added later leaves every
existing id alone. Nested specs are wired once and shared (the memo in
`_wired`), so the 10^6 trainings of a large plan share one model dict and
one recipe dict, which the hashing memo encodes once.
"""
from __future__ import annotations

import functools
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from synscale.study.schema import TrainSection

Range = tuple[int, int]  # [first class, one past the last) of a class range


def _key(f) -> str:
    """A field's key on the wire (a Python keyword such as `from` cannot be a name)."""
    return f.metadata.get("key", f.name)


@dataclass(frozen=True)
class DataSpec:
    """The real dataset: the digits, or an image folder (ImageNet layout)."""
    dataset: str                       # digits | imagefolder
    split_seed: int | None = None      # digits: which images are held out
    test_per_class: int | None = None  # digits: held-out images per class
    train_dir: str | None = None       # imagefolder
    val_dir: str | None = None
    classes: str | None = None         # imagefolder: class list name or file ("": ImageNet-1k)
    metadata: str | None = None        # imagefolder: dates per image, for snapshot curation


@dataclass(frozen=True)
class ModelSpec:
    """A timm ViT ("vit" from the size keys, or a timm name), or a CLIP model."""
    arch: str
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch_size: int | None = None
    mlp_ratio: float | None = None
    objective: str | None = None       # None: a classifier; "clip"
    context_length: int | None = None  # CLIP: tokens per caption
    embed_dim: int | None = None       # CLIP with arch "vit": the joint embedding's width


@dataclass(frozen=True)
class Word2SenSpec:
    model: str
    template: str
    per_class: int


@dataclass(frozen=True)
class PromptOptionsSpec:
    """What a prompt strategy reads besides the class list."""
    word2sen: Word2SenSpec | None = None
    captions: str | None = None        # in-captions: a captions file


@dataclass(frozen=True)
class GenerateSpec:
    """One chunk of one generation config: an index range of a class range."""
    generator: str
    weights: str | tuple[str, ...]     # "": the default checkpoint; a cascade lists its stages
    prompts: str                       # the prompt strategy
    guidance: float                    # the paper's t
    scheduler: str
    steps: int
    batch_size: int                    # images per sampler call
    shard_images: int                  # images per shard file
    seed: int
    data: DataSpec
    classes: Range
    indices: Range                     # [first image, one past the last) of each class
    image_format: str
    image_quality: int | None = None   # lossy formats only
    # how a diffusers generator renders (the embedded DDPM has none of these)
    resolution: int | None = None
    precision: str | None = None
    text_encoder_precision: str | None = None  # imagen's T5, where it differs from precision
    attention: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    device: str | None = None
    options: dict | None = None        # the pipeline's own keyword arguments
    prompt_options: PromptOptionsSpec | None = None
    scores: tuple[str, ...] | None = None
    score_classifier: str | None = None
    score_clip_model: str | None = None


@dataclass(frozen=True)
class CaptionSpec:
    """Caption the real training images of a class range (IN-Captions)."""
    model: str
    per_class: int
    data: DataSpec
    classes: Range
    batch_size: int
    max_new_tokens: int
    precision: str
    device: str


@dataclass(frozen=True)
class PackCaptionsSpec:
    """What a CLIP study's pack writes beside each row: a generated image's
    prompt (from_ = "prompts"), or a real image's captions from a pairs file
    or a prompt strategy on its class name."""
    from_: str | None = field(default=None, metadata={"key": "from"})
    pairs: str | None = None
    prompts: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class PackSpec:
    source: str                        # real | synthetic
    data: DataSpec
    resolution: int | None = None      # image folders: the packed side
    per_class: int | None = None       # rows per class (None: the digits' whole real pool)
    num_classes: int | None = None     # synthetic
    captions: PackCaptionsSpec | None = None
    release_inputs: bool | None = None  # free the generate stages' shards once packed
    bad_images: str | None = None      # "skip": leave undecodable files out (None: fail)
    workers: int | None = None         # not planned: tools/bench_pack.py sets the writer's processes


@dataclass(frozen=True)
class RuleSpec:
    """A curation rule (stages/curate.py)."""
    kind: str                          # quality | safety | snapshot
    score: str | None = None           # quality
    threshold: float | None = None
    inverse: bool | None = None
    year: int | None = None            # snapshot


@dataclass(frozen=True)
class CurateSpec:
    rule: RuleSpec
    per_class: int | None = None       # the pack's rows per class (None: the digits' pool)


@dataclass(frozen=True)
class TrainSpec:
    model: ModelSpec
    recipe: TrainSection               # [train] as the study gives it
    images_per_class: int
    num_classes: int
    seed: int
    shares: tuple[float, ...] | None = None  # one per pack read (mixtures, blends, pools)


@dataclass(frozen=True)
class EvaluateSpec:
    eval_set: str
    data: DataSpec
    batch_size: int
    device: str
    precision: str                     # the training's: bf16 scores under bf16 autocast
    dir: str | None = None             # image-folder sets
    workers: int | None = None         # image-folder sets: loader processes
    zero_shot_templates: str | None = None  # CLIP: the template set
    bad_images: str | None = None      # "skip": leave undecodable files out (None: fail)
    mask: str | None = None            # a set of one's own: the file of the classes it holds


SPECS = {"caption": CaptionSpec, "generate": GenerateSpec, "pack": PackSpec,
         "curate": CurateSpec, "train": TrainSpec, "evaluate": EvaluateSpec}


def wire(spec: Any, memo: dict | None = None) -> dict:
    """The plain dict of a spec: what a stage stores and its id hashes.
    `memo` (a {} kept for one planning): each nested spec is wired once and
    its dict shared by every spec that holds it."""
    out = {}
    for name, key in _layout(type(spec)):
        value = getattr(spec, name)
        if value is None:
            continue
        if hasattr(type(value), "__dataclass_fields__"):
            value = _nested(value, memo)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def _nested(spec: Any, memo: dict | None) -> dict:
    if memo is None:
        return wire(spec)
    hit = memo.get(id(spec))
    if hit is None:  # keeps `spec` alive, so that no other object gets its id
        hit = memo[id(spec)] = (spec, wire(spec, memo))
    return hit[1]


@functools.cache
def _layout(cls) -> tuple[tuple[str, str], ...]:
    """(field name, wire key) of a spec type, in order (fields() is slow at 10^6 calls)."""
    return tuple((f.name, _key(f)) for f in fields(cls))


def read(kind: str, raw: dict):
    """A stage's spec dict as its kind's type; ValueError on any mismatch."""
    if kind not in SPECS:
        raise ValueError(f"unknown stage kind {kind!r}; known: {', '.join(SPECS)}")
    return _read(SPECS[kind], raw, kind)


def parse(cls, raw: dict, where: str = ""):
    """One part of a spec (a DataSpec, a ModelSpec) from its dict, as strictly."""
    return _read(cls, raw, where or cls.__name__)


def _read(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table of {cls.__name__}'s fields, got {raw!r}")
    hints, known = _hints(cls), {_key(f): f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: {cls.__name__} has no field {', '.join(unknown)}; "
                         f"its fields: {', '.join(known)}")
    missing = [key for key, f in known.items() if key not in raw
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{where}: {cls.__name__} needs {', '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} missing")
    return cls(**{f.name: _value(raw[key], hints[f.name], f"{where}.{key}")
                  for key, f in known.items() if key in raw})


def _value(value: Any, hint: Any, where: str) -> Any:
    """`value` as a `hint`-typed field: nested specs read, lists as tuples."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        if hasattr(option, "__dataclass_fields__"):
            if isinstance(value, dict):
                return _read(option, value, where)
            continue
        origin = typing.get_origin(option)
        if origin is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(option)
            items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
            if len(items) == len(value):
                return tuple(_value(v, t, f"{where}[{i}]")
                             for i, (t, v) in enumerate(zip(items, value)))
            continue
        if _is(value, origin or option):
            return value
    shown = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"{where}: {value!r} is not {shown}")


def _is(value: Any, cls: type) -> bool:
    if cls is float:  # JSON and TOML write whole floats as floats; an int is not one
        return type(value) is float
    if cls is int:
        return type(value) is int  # bool is an int subclass, and is no count
    return isinstance(value, cls)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)
