"""Study -> Plan: one stage per unit of work, each with a content id.

Generation renders the largest synthetic size once per (generator, prompts,
guidance), in chunks of (class range x index range) whose images land in the
config's pool; one pack per generation config (and one for the real pool)
writes a single .beton; every data size reads a per-class prefix of it, so
nested sizes never re-render or re-pack anything.

Ids hash content (plan/hashing.py): a stage hashes its inputs' content ids,
so a training of n images per class of a config keeps its id when the
config grows or is cut into other chunks, and its pack, packed again at the
larger size, holds the same rows in the same order.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

from synscale.plan.graph import Plan, Stage
from synscale.plan.hashing import SIZE_KEYS, content_id, stage_id
from synscale.stages import runner_versions
from synscale.study.curation import Source, curated
from synscale.study.load import real_needed, synthetic_needed
from synscale.study.schema import Study
from synscale.study.specs import (
    CaptionSpec,
    DataSpec,
    EvaluateSpec,
    GenerateSpec,
    ModelSpec,
    PackCaptionsSpec,
    PackSpec,
    PromptOptionsSpec,
    TrainSpec,
    Word2SenSpec,
    wire,
)


def _stage(kind: str, spec, inputs: tuple[Stage, ...] = (), axes: dict | None = None,
           memo: dict | None = None, versions: dict | None = None) -> Stage:
    """A stage whose id hashes its spec and what its inputs hold (their content ids,
    once each: a pack of many chunks of one generation config hashes the config).
    `memo` and `versions`: shared by the many trainings of one planning."""
    raw = spec if isinstance(spec, dict) else wire(spec)
    version = (versions or runner_versions())[kind]
    keys = [inputs[0].content_key] if len(inputs) == 1 else sorted({i.content_key for i in inputs})
    sid = stage_id(kind, raw, keys, version, memo)
    content = content_id(kind, raw, keys, version, memo) if kind in SIZE_KEYS else sid
    return Stage(sid, kind, raw, tuple(i.id for i in inputs), axes or {},
                 content="" if content == sid else content)


def _real_data_spec(s: Study) -> DataSpec:
    d = s.data
    if d.dataset == "digits":
        return DataSpec("digits", split_seed=s.study.seed, test_per_class=d.test_per_class)
    return DataSpec("imagefolder", train_dir=d.train_dir, val_dir=d.val_dir, classes=d.classes)


def _num_classes(s: Study) -> int:
    from synscale.prompts.classes import of_data
    return len(of_data(_real_data_spec(s)))


def _models(s: Study) -> list[ModelSpec]:
    m = s.model
    clip = {} if m.objective != "clip" else {"objective": "clip",
                                              "context_length": m.context_length}
    if m.arch != "vit":
        return [ModelSpec(m.arch, **clip)]
    if clip:
        clip["embed_dim"] = m.embed_dim
    return [ModelSpec("vit", width=w, depth=m.depth, heads=m.heads, patch_size=m.patch_size,
                      mlp_ratio=m.mlp_ratio, **clip) for w in m.width]


def _render_settings(g, generator: str) -> dict:
    """How a diffusers generator renders; the embedded DDPM has none of it."""
    if generator == "embedded-ddpm":
        return {}
    from synscale.generators import options_of
    # only imagen holds its text encoder apart; set only where it differs, so
    # that the ids of renders that do not use it stay as they were
    text = g.text_encoder_precision if generator == "imagen" else ""
    return {"resolution": g.resolution, "precision": g.precision, "attention": g.attention,
            "channels_last": g.channels_last, "compile": g.compile, "device": g.device,
            "options": {**options_of(generator), **g.options.get(generator, {})},
            **({"text_encoder_precision": text} if text and text != g.precision else {})}


def _storage(g, generator: str) -> dict:
    """How shards encode images; quality only where the format is lossy, so that
    it changes only the stages it affects."""
    fmt = g.image_format if g.image_format != "auto" else \
        ("png" if generator == "embedded-ddpm" else "jpeg")
    return {"image_format": fmt, **({"image_quality": g.image_quality} if fmt != "png" else {})}


def _score_settings(g) -> dict:
    if not g.scores:
        return {}
    return {"scores": tuple(g.scores), "score_classifier": g.score_classifier,
            "score_clip_model": g.score_clip_model}


def _prompt_settings(s: Study, strategy: str) -> dict:
    """What a strategy reads besides the class list, so that only it changes the stage id."""
    p = s.prompts
    if strategy == "word2sen":
        return {"prompt_options": PromptOptionsSpec(word2sen=Word2SenSpec(
            p.word2sen_model, p.word2sen_template, p.word2sen_per_class))}
    if strategy == "in-captions":
        return {"prompt_options": PromptOptionsSpec(captions=p.captions)}
    return {}


def _captions(s: Study, source: str) -> PackCaptionsSpec | None:
    """What a CLIP study's packs write beside the images: each row's caption."""
    if s.model.objective != "clip":
        return None
    if source == "synthetic":
        return PackCaptionsSpec(from_="prompts")  # the prompt each image was rendered from
    d = s.data
    return PackCaptionsSpec(pairs=d.caption_pairs, prompts=d.caption_prompts, seed=s.study.seed)


def _real_pack(s: Study, real: DataSpec) -> Stage:
    sizes = s.sweep.real_images_per_class if "real" in s.sweep.sources else ()
    pooled = s.sweep.mixture_images_per_class if "real" in s.curate.leave_one_out else ()
    rgb = {} if s.data.dataset == "digits" else {
        "resolution": s.data.resolution,
        "per_class": max((*sizes, *pooled, real_needed(s.sweep)))}
    data = replace(real, metadata=s.data.metadata or None)
    skip = "skip" if s.data.bad_images == "skip" and s.data.dataset != "digits" else None
    return _stage("pack", PackSpec("real", data, **rgb, captions=_captions(s, "real"),
                                   bad_images=skip))


def _synthetic_packs(s: Study, real: DataSpec) -> list[tuple[Stage, list[Stage], dict]]:
    """(pack, the stages it reads, axes) per generation config."""
    g = s.generate
    n_classes = _num_classes(s)
    largest = synthetic_needed(s)
    ranges = [[lo, min(lo + g.classes_per_task, n_classes)]
              for lo in range(0, n_classes, g.classes_per_task)]
    step = g.images_per_task or largest
    spans = [(a, min(a + step, largest)) for a in range(0, largest, step)]
    captions = _caption_stages(s, real, ranges)
    out = []
    for generator in g.generators:
        for prompts in g.prompts:
            for guidance in g.guidance:
                config = {"generator": generator, "weights": g.weights.get(generator, ""),
                          "prompts": prompts, "guidance": guidance, "scheduler": g.scheduler,
                          "steps": g.steps, "batch_size": g.batch_size,
                          "shard_images": g.shard_images, "seed": s.study.seed, "data": real,
                          **_render_settings(g, generator), **_storage(g, generator),
                          **_prompt_settings(s, prompts),
                          **_score_settings(g)}
                reads = captions if prompts == "in-captions" else {}
                gens = [_stage("generate", GenerateSpec(**config, classes=tuple(r),
                                                        indices=span),
                               (reads[r[0]],) if reads else ())
                        for r in ranges for span in spans]
                rgb = {} if s.data.dataset == "digits" else {"resolution": s.data.resolution}
                pack = _stage("pack", PackSpec("synthetic", real, per_class=largest,
                                               num_classes=n_classes, **rgb,
                                               captions=_captions(s, "synthetic"),
                                               release_inputs=None if g.keep_shards else True),
                              tuple(gens))
                axes = {"generator": generator, "prompts": prompts, "guidance": guidance}
                out.append((pack, [*reads.values(), *gens], axes))
    return out


def _sources(s: Study, real: DataSpec) -> list[Source]:
    """Every training source: the plain ones of [sweep] (a mixture reads
    (real, synthetic)), then the curated ones of [curate]."""
    sw, c, out = s.sweep, s.curate, []
    wants_real = {"real", "mixture"} & set(sw.sources) or "real" in c.leave_one_out
    real_pack = _real_pack(s, real) if wants_real else None
    wants_synthetic = ({"synthetic", "mixture"} & set(sw.sources) or c.blends
                       or set(c.leave_one_out) - {"real"})
    synthetic = _synthetic_packs(s, real) if wants_synthetic else []
    plain = {"curation": ""}
    no_gen = {"generator": "", "prompts": "", "guidance": "", "synthetic_share": "", **plain}
    if "real" in sw.sources:
        out.append(Source((real_pack,), (real_pack,), {"source": "real", **no_gen},
                          sw.real_images_per_class))
    for pack, gens, gen_axes in synthetic:
        if "synthetic" in sw.sources:
            out.append(Source((*gens, pack), (pack,),
                              {"source": "synthetic", **gen_axes, "synthetic_share": "", **plain},
                              sw.synthetic_images_per_class))
        for share in (sw.synthetic_shares if "mixture" in sw.sources else ()):
            out.append(Source((real_pack, *gens, pack), (real_pack, pack),
                              {"source": "mixture", **gen_axes, "synthetic_share": share, **plain},
                              sw.mixture_images_per_class, {"shares": (1 - share, share)}))
    return out + curated(s, out, real_pack, synthetic, _stage)


def _caption_stages(s: Study, real: DataSpec, ranges: list) -> dict[int, Stage]:
    """IN-Captions without a captions file: caption the real training images,
    one stage per class range (first class -> stage), shared by every
    generation config that reads them."""
    p, g = s.prompts, s.generate
    if "in-captions" not in g.prompts or p.captions:
        return {}
    return {r[0]: _stage("caption", CaptionSpec(p.caption_model, p.captions_per_class, real,
                                                     tuple(r), batch_size=16, max_new_tokens=30,
                                                     precision=g.precision, device=g.device))
            for r in ranges}


def _eval_spec(s: Study, eval_set: str, real: DataSpec) -> EvaluateSpec:
    e = s.evaluate
    folder = {} if eval_set == "digits-test" else {
        "dir": s.data.val_dir if eval_set == "imagenet-val" else e.dirs.get(eval_set, ""),
        "workers": e.workers, "bad_images": "skip" if s.data.bad_images == "skip" else None,
        "mask": e.masks.get(eval_set)}
    # the training's precision: a bf16 model is scored under bf16 autocast
    return EvaluateSpec(eval_set, real, e.batch_size, e.device, s.train.precision, **folder)


def _evaluations(s: Study, real: DataSpec) -> list[tuple[EvaluateSpec, dict]]:
    """(spec, axes) of each evaluation of one trained model: a CLIP model is
    scored zero-shot once per template set."""
    out = []
    for eval_set in s.evaluate.sets:
        spec = _eval_spec(s, eval_set, real)
        if s.model.objective != "clip":
            out.append((spec, {"eval_set": eval_set}))
            continue
        out += [(replace(spec, zero_shot_templates=t), {"eval_set": eval_set, "templates": t})
                for t in s.evaluate.zero_shot_templates]
    return out


def expand(s: Study) -> Plan:
    real, recipe = _real_data_spec(s), s.train
    stages: list[Stage] = []
    seen: set[str] = set()
    position: dict[str, int] = {}  # train/evaluate id -> index in stages

    def add(stage: Stage) -> None:
        """Plan a stage once; the same work asked again adds its coordinates."""
        if stage.id in position:
            i = position[stage.id]
            stages[i] = replace(stages[i], also=(*stages[i].also, stage.axes))
        else:
            position[stage.id] = len(stages)
            stages.append(stage)

    # Trainings and evaluations are nearly every stage of a large plan (10^6):
    # what they have in common is built once and shared, not copied, by their
    # specs (an evaluation's whole spec; a training's model and recipe), wired
    # once (`wired`) and hashed once (`memo`). Nothing changes a spec once planned.
    memo, wired, versions = {}, {}, runner_versions()
    models, num_classes = _models(s), _num_classes(s)
    evaluations = [(wire(spec, wired), axes) for spec, axes in _evaluations(s, real)]
    repeats = {int(k): v for k, v in s.sweep.repeats.items()}


    for src in _sources(s, real):
        # packs and caption stages are shared by several sources: plan each once
        stages += [x for x in src.needs if x.id not in seen]
        seen.update(x.id for x in src.needs)
        reads = tuple(src.reads)
        for model in models:
            for n in src.sizes:
                axes = {**src.axes, "arch": model.arch,
                        "width": "" if model.width is None else model.width,
                        "images_per_class": n}
                for r in range(repeats.get(n, 1)):
                    spec = TrainSpec(model, recipe, n, num_classes, repeat_seed(s.study.seed, r),
                                     **src.adds)
                    train = _stage("train", wire(spec, wired), reads, axes, memo, versions)
                    add(train)
                    for spec, eval_axes in evaluations:
                        add(_stage("evaluate", spec, (train,), {**axes, **eval_axes}, memo,
                                   versions))
    return Plan(s.study.name, stages)


def repeat_seed(seed: int, repeat: int) -> int:
    """The training seed of a size's `repeat`-th run: the study seed for the
    first (so adding repeats leaves the trainings already done in place),
    then one drawn from (seed, repeat), far from the small seeds people pick."""
    if repeat == 0:
        return seed
    digest = hashlib.sha256(f"synscale-repeat:{seed}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
