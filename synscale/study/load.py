"""TOML -> Study, reporting every problem at once.

Each problem names the file, the key path, the value and what is allowed, so
a user fixes a study in one pass. Nothing here touches the run directory:
a study that fails to load leaves nothing behind.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from synscale.study.schema import (
    ARCHS,
    CLIP_CONFIGS,
    EVAL_SETS,
    RESOURCE_KINDS,
    SECTIONS,
    SIZE_KEYS,
    Resources,
    RetryPolicy,
    Study,
    split_counts,
)

TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              dict: "a table"}


class StudyError(Exception):
    """One or more problems with a study file; str() lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def _finite(value: Any) -> bool:
    """A number that bounds can be checked on: nan passes every min and max (it
    compares false), inf every min and -inf every max (TOML reads 1e400 as inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _key(key: str) -> str:
    """One key as a TOML file spells it, so [""] or ["a.b"] stay visible."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _unknown(file: str, parent: str, key: str, value: Any, allowed, what: str) -> str:
    """The problem for a key not in `allowed`, named by the path the file wrote:
    [a.b.c] nests as {a: {b: {c: {}}}}, so follow lone sub-tables down to it.
    No [brackets] around names: the launcher prints problems as rich markup."""
    path = f"{parent}.{_key(key)}" if parent else _key(key)
    while isinstance(value, dict) and len(value) == 1 \
            and isinstance(next(iter(value.values())), dict):
        sub, value = next(iter(value.items()))
        path += f".{_key(sub)}"
    hint = difflib.get_close_matches(key, allowed, n=1)
    return (f"{file}: {path}: unknown {what}; allowed: {', '.join(allowed)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _check_scalar(value: Any, meta: dict, where: str, problems: list[str]) -> Any:
    kind = meta["type"]
    # TOML booleans are not numbers, and an integer is a fine float.
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        problems.append(f"{where} = {_show(value)}: expected {TYPE_NAMES[kind]}")
        return None
    if kind is float and not _finite(value):
        problems.append(f"{where} = {_show(value)}: must be a finite number")
        return None
    if "choices" in meta and value not in meta["choices"]:
        hint = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        problems.append(f"{where} = {_show(value)}: not one of "
                        f"{', '.join(_show(c) for c in meta['choices'])}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return None
    if "min" in meta and value < meta["min"]:
        problems.append(f"{where} = {_show(value)}: must be >= {meta['min']}")
        return None
    if "max" in meta and value > meta["max"]:
        problems.append(f"{where} = {_show(value)}: must be <= {meta['max']}")
        return None
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        problems.append(f"{where} = {_show(value)}: must be {meta['pattern_doc']}")
        return None
    return value


def _check_field(value: Any, meta: dict, where: str, problems: list[str]) -> Any:
    if meta.get("list"):  # a set of options, possibly empty; not a sweep axis
        if not isinstance(value, list):
            problems.append(f"{where} = {_show(value)}: expected a list")
            return None
        before = len(problems)
        checked = [_check_scalar(v, meta, where, problems) for v in value]
        if len(problems) == before and len(set(checked)) != len(checked):
            problems.append(f"{where} = {_show(value)}: values must be distinct")
        return tuple(checked) if len(problems) == before else None
    if meta.get("axis"):
        values = value if isinstance(value, list) else [value]
        if not values:
            problems.append(f"{where} = []: a sweep axis needs at least one value")
            return None
        before = len(problems)
        checked = [_check_scalar(v, meta, where, problems) for v in values]
        if len(problems) > before:
            return None
        if len(set(checked)) != len(checked):
            problems.append(f"{where} = {_show(value)}: values must be distinct")
            return None
        return tuple(sorted(checked)) if meta["type"] in (int, float) else tuple(checked)
    if meta["type"] is dict:
        if not isinstance(value, dict):
            problems.append(f"{where} = {_show(value)}: expected a table")
            return None
        return dict(value)
    if isinstance(value, list):
        problems.append(f"{where} = {_show(value)}: expected {TYPE_NAMES[meta['type']]}, "
                        "not a list (this key is not a sweep axis)")
        return None
    return _check_scalar(value, meta, where, problems)


def _section(cls: type, raw: Any, name: str, file: str, problems: list[str]):
    if not isinstance(raw, dict):
        problems.append(f"{file}: {name} = {_show(raw)}: expected a table")
        return None
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        where = f"{file}: {name}.{key}"
        if key not in known:
            problems.append(_unknown(file, name, key, value, known, "key"))
            continue
        checked = _check_field(value, dict(known[key].metadata), where, problems)
        if checked is not None:
            values[key] = checked
    for f in known.values():
        if f.metadata.get("required") and f.name not in raw:
            problems.append(f"{file}: {name}.{f.name}: missing; {f.metadata['doc']}")
    try:
        return cls(**values)
    except TypeError:
        return None


def _cross_checks(s: Study, file: str, problems: list[str]) -> None:
    """Rules that relate keys to each other."""
    sw = s.sweep
    for source, key in SIZE_KEYS.items():
        if source in sw.sources and not getattr(sw, key):
            problems.append(f"{file}: sweep.{key} = []: sweep.sources includes {source!r}, "
                            "so it needs at least one size")
    _repeat_checks(s, file, problems)
    _objective_checks(s, file, problems)
    _curate_checks(s, file, problems)
    m = s.model
    if m.arch == "vit":
        if not m.width:
            problems.append(f"{file}: model.width: missing; arch 'vit' needs one or more widths")
        for w in m.width:
            if w % m.heads:
                problems.append(f"{file}: model.width = {w}: must be divisible by model.heads = "
                                f"{m.heads}")
    elif m.width:
        problems.append(f"{file}: model.width = {list(m.width)}: only arch 'vit' takes a width; "
                        f"{m.arch!r} has its own")
    _generate_checks(s, file, problems)
    d = s.data
    if d.dataset == "digits":
        bad = [e for e in s.evaluate.sets if e != "digits-test"]
        if bad:
            problems.append(f"{file}: evaluate.sets = {list(s.evaluate.sets)}: the digits dataset "
                            "is evaluated on 'digits-test' only")
        if set(sw.sources) & {"real", "mixture"}:
            from synscale.data.digits import smallest_class_pool
            pool = smallest_class_pool(d.test_per_class)
            sizes = sw.real_images_per_class if "real" in sw.sources else ()
            too_big = [n for n in sizes if n > pool]
            if too_big:
                problems.append(f"{file}: sweep.real_images_per_class = {too_big}: the digits pool "
                                f"holds {pool} images in its smallest class after "
                                f"{d.test_per_class} per class are held out for testing")
            if "mixture" in sw.sources and real_needed(sw) > pool:
                problems.append(f"{file}: sweep.mixture_images_per_class = "
                                f"{list(sw.mixture_images_per_class)}: with synthetic_shares "
                                f"{list(sw.synthetic_shares)} they need {real_needed(sw)} real "
                                f"images per class; the digits pool holds {pool}")
    else:
        for key in ("train_dir", "val_dir"):
            if not getattr(d, key):
                problems.append(f"{file}: data.{key}: missing; dataset 'imagefolder' needs it")
        from synscale.prompts.classes import LISTS
        if d.classes and d.classes not in LISTS and not Path(d.classes).is_file():
            problems.append(f"{file}: data.classes = {_show(d.classes)}: neither a known class "
                            f"list ({', '.join(LISTS)}) nor a file (one wnid or name per line)")
        if "digits-test" in s.evaluate.sets:
            problems.append(f"{file}: evaluate.sets: 'digits-test' needs dataset 'digits'")
        e = s.evaluate
        for name in e.sets:
            if name not in ("digits-test", "imagenet-val") and not e.dirs.get(name):
                own = ""
                if name not in EVAL_SETS:  # a set of one's own, or a misspelt known one
                    hint = difflib.get_close_matches(name, EVAL_SETS, n=1)
                    own = (f" (not one of {', '.join(EVAL_SETS)}: a set of your own needs its "
                           "folder" + (f"; did you mean {hint[0]!r}?)" if hint else ")"))
                problems.append(f"{file}: evaluate.dirs.{name}: missing; evaluate.sets includes "
                                f"{name!r}, a folder of class folders{own}")
        for name, folder in e.dirs.items():
            if name not in e.sets or name == "imagenet-val":
                problems.append(f"{file}: evaluate.dirs.{name}: not a set of evaluate.sets read "
                                f"from a folder ({', '.join(x for x in e.sets if x != 'imagenet-val')})")
            elif not isinstance(folder, str):
                problems.append(f"{file}: evaluate.dirs.{name} = {_show(folder)}: expected a path")
        for name, mask in e.masks.items():
            if name not in e.dirs or name in EVAL_SETS:
                problems.append(f"{file}: evaluate.masks.{name}: not a set of your own in "
                                "evaluate.dirs (ImageNet-R and -A bring their own masks)")
            elif not isinstance(mask, str) or not Path(mask).is_file():
                problems.append(f"{file}: evaluate.masks.{name} = {_show(mask)}: no such file "
                                "(one wnid or class name per line)")
        if "embedded-ddpm" in s.generate.generators and "synthetic" in sw.sources:
            problems.append(f"{file}: generate.generators: 'embedded-ddpm' renders 8x8 digits only; "
                            "use it with dataset 'digits'")
    for kind, res in s.resources.items():
        for key in ("nodes", "tasks_per_node"):
            if kind != "train" and getattr(res, key) > 1:
                problems.append(f"{file}: resources.{kind}.{key} = {getattr(res, key)}: only "
                                "training runs several tasks; other stages are one task each")
        if kind != "train" and res.micro_batch_size:
            problems.append(f"{file}: resources.{kind}.micro_batch_size = {res.micro_batch_size}: "
                            "only training has a micro batch")
    _device_checks(s, file, problems)
    r = s.resources.get("train")
    if r is not None and s.train.batch_size % (r.nodes * r.tasks_per_node):
        problems.append(f"{file}: train.batch_size = {s.train.batch_size}: must split evenly over "
                        f"resources.train nodes * tasks_per_node = {r.nodes * r.tasks_per_node} "
                        "tasks")
    elif r is not None and r.micro_batch_size and \
            (s.train.batch_size // (r.nodes * r.tasks_per_node)) % r.micro_batch_size:
        problems.append(f"{file}: resources.train.micro_batch_size = {r.micro_batch_size}: must "
                        f"divide the {s.train.batch_size // (r.nodes * r.tasks_per_node)} images "
                        "each task computes per step (train.batch_size / tasks)")
    if s.train.min_steps > s.train.max_steps:
        problems.append(f"{file}: train.min_steps = {s.train.min_steps}: must be <= "
                        f"train.max_steps = {s.train.max_steps}")


# The section whose `device` each stage kind runs on (caption: the generation's).
DEVICE_KEYS = {"caption": "generate", "generate": "generate", "train": "train",
               "evaluate": "evaluate"}


def _device_checks(s: Study, file: str, problems: list[str]) -> None:
    """GPUs asked of Slurm for a kind that is told to stay on the CPU would
    sit idle for the whole job: an error before anything is submitted."""
    for kind, section in DEVICE_KEYS.items():
        res, device = s.resources.get(kind), getattr(s, section).device
        if res is not None and res.gpus > 0 and device == "cpu":
            problems.append(f"{file}: {section}.device = 'cpu': resources.{kind}.gpus = "
                            f"{res.gpus} asks Slurm for GPUs that {kind} stages would not use; "
                            f"set {section}.device = 'auto' or 'cuda', or resources.{kind}.gpus "
                            "= 0")


def _curate_checks(s: Study, file: str, problems: list[str]) -> None:
    """[curate] against the rest of the study: what each setting needs."""
    from synscale.study.curation import select

    c, sw, d = s.curate, s.sweep, s.data
    if (c.thresholds or c.safety) and not set(c.applies_to) & set(sw.sources):
        problems.append(f"{file}: curate.applies_to = {list(c.applies_to)}: none of "
                        f"sweep.sources {list(sw.sources)}; the filters would curate nothing")
    if c.thresholds and d.dataset != "digits" and \
            {"recognizability": "recognizability", "clip_score": "clip"}[c.score] \
            not in s.generate.scores:
        problems.append(f"{file}: curate.score = {c.score!r}: generated images carry it only "
                        "when generate.scores asks for it")
    if c.snapshots and not d.metadata:
        problems.append(f"{file}: curate.snapshots = {list(c.snapshots)}: needs data.metadata, "
                        "a file dating each real training image")
    if c.snapshots and "real" not in sw.sources:
        problems.append(f"{file}: curate.snapshots: snapshots curate real training sets; "
                        "sweep.sources has no 'real'")
    if (c.blends or c.leave_one_out) and not sw.mixture_images_per_class:
        problems.append(f"{file}: sweep.mixture_images_per_class = []: curate.blends and "
                        "curate.leave_one_out train at those sizes; give at least one")
    configs = [{"generator": g, "prompts": p, "guidance": t} for g in s.generate.generators
               for p in s.generate.prompts for t in s.generate.guidance]
    share_sets = [[1 - x, x] for x in sw.synthetic_shares] if "mixture" in sw.sources else []
    for name, parts in c.blends.items():
        if not isinstance(parts, dict) or not parts:
            problems.append(f"{file}: curate.blends.{name}: expected a table of selector = share")
            continue
        for sel, share in parts.items():
            try:
                select(sel, configs)
            except ValueError as e:
                problems.append(f"{file}: curate.blends.{name}: {e}")
            if not _finite(share) or not 0 < share <= 1:
                problems.append(f"{file}: curate.blends.{name}.{sel} = {_show(share)}: must be a "
                                "finite number in (0, 1], a share")
        shares = [v for v in parts.values() if _finite(v)]
        if abs(sum(shares) - 1) > 1e-9:
            problems.append(f"{file}: curate.blends.{name}: shares sum to {sum(shares):g}; they "
                            "must sum to 1")
        share_sets.append(shares)
    for sel in c.leave_one_out:
        if sel != "real":
            try:
                select(sel, configs)
            except ValueError as e:
                problems.append(f"{file}: curate.leave_one_out: {e}")
    if c.leave_one_out:
        if len(set(c.leave_one_out)) < 2:
            problems.append(f"{file}: curate.leave_one_out = {list(c.leave_one_out)}: needs at "
                            "least two distinct sources")
        k = len(c.leave_one_out)
        share_sets += [[1 / k] * k, [1 / (k - 1)] * (k - 1)] if k > 1 else []
    for shares in share_sets:
        split = [s.train.batch_size * x for x in shares]
        if any(abs(v - round(v)) > 1e-6 for v in split):
            problems.append(f"{file}: train.batch_size = {s.train.batch_size}: cannot hold shares "
                            f"{[round(x, 4) for x in shares]} in whole images per batch")


def _repeat_checks(s: Study, file: str, problems: list[str]) -> None:
    sw = s.sweep
    sizes = {n for src, key in SIZE_KEYS.items() if src in sw.sources for n in getattr(sw, key)}
    for key, count in sw.repeats.items():
        where = f"{file}: sweep.repeats.{key}"
        try:
            size = int(key)
        except ValueError:
            size = None
        if size is None or size not in sizes:
            problems.append(f"{where}: not a training size of this study; a key is images per "
                            f"class, one of {', '.join(map(str, sorted(sizes))) or 'none'}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            problems.append(f"{where} = {_show(count)}: expected a whole number >= 1 (the "
                            "trainings at that size, each with its own seed)")


def synthetic_needed(s: Study) -> int:
    """Generated images per class every generation config renders: the largest
    synthetic size, a mixture's generated part or a curated blend's draw."""
    sw, c = s.sweep, s.curate
    mixed = sw.mixture_images_per_class if (c.blends or c.leave_one_out) else ()
    return max((*sw.synthetic_images_per_class, *mixed,
                *(split_counts(n, [1 - share, share])[1] for n in sw.mixture_images_per_class
                  for share in sw.synthetic_shares)), default=0)


def real_needed(sw) -> int:
    """Real images per class the mixtures read (the rest of each set is generated)."""
    return max((split_counts(n, [1 - share, share])[0] for n in sw.mixture_images_per_class
                for share in sw.synthetic_shares), default=0)


def _objective_checks(s: Study, file: str, problems: list[str]) -> None:
    """What a classifier and a CLIP model each accept."""
    m, t, d = s.model, s.train, s.data
    if m.objective == "classifier":
        if m.arch in CLIP_CONFIGS:
            problems.append(f"{file}: model.arch = {m.arch!r}: an open_clip configuration; "
                            f"objective 'classifier' takes {', '.join(ARCHS)}")
        if d.caption_pairs:
            problems.append(f"{file}: data.caption_pairs: captions train CLIP models only; "
                            "set model.objective = \"clip\" or remove it")
        return
    for key in ("mixup", "cutmix", "randaugment"):
        if getattr(t, key):
            problems.append(f"{file}: train.{key} = {getattr(t, key)}: a classifier's "
                            "augmentation; objective 'clip' trains without it (set 0)")
    if d.dataset == "digits":
        if d.caption_pairs:
            problems.append(f"{file}: data.caption_pairs: the digits have no files to pair; "
                            "their captions come from data.caption_prompts")
        if d.caption_prompts not in ("classnames", "clip-templates-7", "clip-templates-80"):
            problems.append(f"{file}: data.caption_prompts = {d.caption_prompts!r}: needs "
                            "WordNet metadata, which the digits lack; use classnames, "
                            "clip-templates-7 or clip-templates-80")


def _generate_checks(s: Study, file: str, problems: list[str]) -> None:
    from synscale.generators import FAMILIES, SAMPLERS, options_of
    from synscale.prompts.strategies import WORDNET

    g, synthetic = s.generate, "synthetic" in s.sweep.sources
    _batch_checks(g, synthetic_needed(s), file, problems)
    for name, w in g.weights.items():
        cascade = name == "imagen" and isinstance(w, list) and 1 <= len(w) <= 2
        if name not in g.generators:
            problems.append(f"{file}: generate.weights.{name}: not a generator of this study; "
                            f"generate.generators = {list(g.generators)}")
        elif not (isinstance(w, str) and w) and not (cascade and all(isinstance(x, str) and x
                                                                     for x in w)):
            problems.append(f"{file}: generate.weights.{name} = {_show(w)}: expected a local "
                            "folder or a Hugging Face model id" +
                            (" (or a list: stage I, then stage II)" if name == "imagen" else ""))
    for name in g.generators:
        if synthetic and name != "embedded-ddpm" and name not in g.weights:
            problems.append(f"{file}: generate.weights.{name}: missing; {name!r} needs a local "
                            "folder or Hugging Face id of its weights")
        if g.scheduler not in SAMPLERS[name]:
            problems.append(f"{file}: generate.scheduler = {g.scheduler!r}: {name!r} samples with "
                            f"{', '.join(map(repr, SAMPLERS[name]))}")
    if g.text_encoder_precision and "imagen" not in g.generators:
        problems.append(f"{file}: generate.text_encoder_precision = "
                        f"{g.text_encoder_precision!r}: only imagen holds its text encoder (T5-XXL) "
                        f"at a precision of its own; this study renders with "
                        f"{', '.join(g.generators)} (leave it out)")
    for name, opts in g.options.items():
        known = options_of(name)
        if name not in g.generators or not isinstance(opts, dict):
            problems.append(f"{file}: generate.options.{name}: expected a table for a generator "
                            f"of this study ({', '.join(g.generators)})")
            continue
        for key, value in opts.items():
            if key not in known:
                problems.append(f"{file}: generate.options.{name}.{key}: unknown; {name!r} takes "
                                f"{', '.join(known) or 'no options'}")
            elif not _finite(value) or value < 0:
                problems.append(f"{file}: generate.options.{name}.{key} = {_show(value)}: must be "
                                "a finite number >= 0")
    if not synthetic:
        return
    if "embedded-ddpm" in g.generators and g.image_format in ("jpeg", "webp"):
        problems.append(f"{file}: generate.image_format = {g.image_format!r}: the embedded DDPM "
                        "renders float samples, which are stored losslessly only; use \"png\" "
                        "or \"auto\"")
    if s.data.dataset == "digits":
        rgb = [n for n in g.generators if n in FAMILIES]
        if rgb:
            problems.append(f"{file}: generate.generators = {rgb}: dataset 'digits' trains on 8x8 "
                            "grayscale digits, which only 'embedded-ddpm' renders")
        wordnet = [p for p in g.prompts if p in WORDNET]
        if wordnet:
            problems.append(f"{file}: generate.prompts = {wordnet}: these need WordNet metadata "
                            "(glosses, hypernyms), which the digits have not; they take "
                            "classnames, clip-templates-7, clip-templates-80, word2sen, in-captions")
    if "clip" in g.scores and not g.score_clip_model:
        problems.append(f"{file}: generate.score_clip_model: missing; generate.scores 'clip' "
                        "needs a CLIP model")
    if ("recognizability" in g.scores and s.data.dataset != "digits"
            and not g.score_classifier):
        problems.append(f"{file}: generate.score_classifier: missing; generate.scores "
                        "'recognizability' on an image folder needs a classifier of its classes")
    if "in-captions" in g.prompts and not s.prompts.captions and s.data.dataset == "digits":
        problems.append(f"{file}: prompts.captions: missing; 'in-captions' on the digits needs a "
                        "captions file (the captioning stage reads image folders)")


def _batch_checks(g, largest: int, file: str, problems: list[str]) -> None:
    """Shards hold whole sampler batches and chunks whole shards (plan/batches.py):
    every shard and chunk of a class starts at a multiple of batch_size."""
    b, n, k = g.batch_size, g.shard_images, g.images_per_task
    if k and k < largest and (k % b or (k % n and n < largest)):
        unit = b if n >= largest else n
        problems.append(f"{file}: generate.images_per_task = {k}: a generate stage's range must "
                        f"start at a multiple of {'batch_size' if unit == b else 'shard_images'} "
                        f"({unit}); accepted: a multiple of {unit} "
                        f"({max(unit, k // unit * unit)}, {-(-k // unit) * unit}, ...), or 0 "
                        "(all of a class's images in one stage)")
    if n % b == 0 or n >= largest:  # one shard a class starts at 0
        return
    near = sorted({max(b, n // b * b), -(-n // b) * b})
    divisors = [d for d in range(min(b, n), 0, -1) if n % d == 0][:3]
    problems.append(f"{file}: generate.shard_images = {n} with batch_size = {b}: a class's second "
                    f"shard would start at image {n}, inside a sampler batch, and images depend "
                    f"on the batch they share; accepted: shard_images a multiple of {b} "
                    f"({', '.join(map(str, near))}), or a batch_size dividing {n} "
                    f"({', '.join(map(str, divisors))}, ...), or shard_images >= {largest} "
                    "(one shard a class)")


def _per_kind(cls: type, name: str, raw: Any, file: str, problems: list[str]) -> dict:
    """[name.<kind>] tables, one per stage kind, defaults where absent."""
    if not isinstance(raw, dict):
        problems.append(f"{file}: {name} = {_show(raw)}: expected tables {name}.<kind>, one per "
                        "stage kind")
        return {}
    out = {}
    for kind, table in raw.items():
        if kind not in RESOURCE_KINDS:
            problems.append(_unknown(file, name, kind, table, RESOURCE_KINDS, "stage kind"))
            continue
        out[kind] = _section(cls, table, f"{name}.{kind}", file, problems)
    for kind in RESOURCE_KINDS:
        out.setdefault(kind, cls())
    return out


def load_study(path: str | Path) -> Study:
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise StudyError([f"{file}: cannot read the study file: {e.strerror}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError([f"{file}: not valid TOML: {e}"]) from None
    return study_from_tables(raw, file, text)


def study_from_tables(raw: dict, file: str, text: str = "") -> Study:
    """A Study from parsed TOML tables (a study file, or one edited in memory
    as --suggest's candidates are), with every check load_study makes."""
    problems: list[str] = []
    tables = [*SECTIONS, "resources", "retry"]
    for key, value in raw.items():
        if key not in tables:
            problems.append(_unknown(file, "", key, value, tables, "table"))
    if "study" not in raw:
        problems.append(f"{file}: study: missing table; it needs at least name = \"...\"")
    parts = {name: _section(cls, raw.get(name, {}), name, file, problems)
             for name, cls in SECTIONS.items()}
    resources = _per_kind(Resources, "resources", raw.get("resources", {}), file, problems)
    retry = _per_kind(RetryPolicy, "retry", raw.get("retry", {}), file, problems)
    if problems or any(v is None for v in parts.values()):
        raise StudyError(problems or [f"{file}: invalid study"])
    study = Study(**parts, resources=resources, retry=retry, path=file, text=text)
    _cross_checks(study, file, problems)
    if problems:
        raise StudyError(problems)
    return study
