"""Plan hashing: same spec, same id; excluded keys never change ids; a change
propagates to what depends on it and nowhere else."""
from dataclasses import replace

from synscale.plan.hashing import image_seed, stage_id
from synscale.study.expand import expand
from synscale.study.load import load_study


def ids_by_kind(plan):
    out = {}
    for s in plan.stages:
        out.setdefault(s.kind, set()).add(s.id)
    return out


def test_same_spec_same_id_and_key_order_is_irrelevant():
    a = stage_id("train", {"x": 1, "y": {"b": 2, "a": 3}}, ["p2", "p1"], "1")
    b = stage_id("train", {"y": {"a": 3, "b": 2}, "x": 1}, ["p1", "p2"], "1")
    assert a == b
    assert a != stage_id("train", {"x": 2, "y": {"b": 2, "a": 3}}, ["p1", "p2"], "1")
    assert a != stage_id("train", {"x": 1, "y": {"b": 2, "a": 3}}, ["p1", "p2"], "2")


def test_excluded_keys_do_not_change_ids(small_study):
    s = load_study(small_study())
    base = expand(s)
    tuned = expand(replace(s, train=replace(s.train, log_every=7, loader_workers=3),
                           backend=replace(s.backend, workers=9)))
    assert [x.id for x in base.stages] == [x.id for x in tuned.stages]


def test_epochs_change_invalidates_training_and_after_only(small_study):
    s = load_study(small_study())
    base, more = ids_by_kind(expand(s)), ids_by_kind(expand(replace(s, train=replace(s.train,
                                                                                     epochs=31.0))))
    assert base["generate"] == more["generate"] and base["pack"] == more["pack"]
    assert not base["train"] & more["train"] and not base["evaluate"] & more["evaluate"]


def test_guidance_change_reaches_its_config_and_nothing_else(small_study):
    s = load_study(small_study())
    a = expand(replace(s, generate=replace(s.generate, guidance=(1.0, 2.0))))
    b = expand(replace(s, generate=replace(s.generate, guidance=(1.0, 3.0))))
    changed = {x.id for x in a.stages} - {x.id for x in b.stages}
    kept = {x.id for x in a.stages} & {x.id for x in b.stages}
    by_id = a.by_id
    assert {by_id[i].axes.get("guidance") for i in changed if by_id[i].axes} == {2.0}
    assert any(by_id[i].kind == "generate" for i in changed)
    # The guidance-2 stages and everything downstream of them, exactly.
    roots = {i for i in changed if by_id[i].kind == "generate"}
    assert changed == roots | a.downstream(roots)
    # Real data stages and the guidance-1 config are untouched.
    assert all(by_id[i].axes.get("guidance") in ("", 1.0) for i in kept if by_id[i].axes)


def test_one_pack_per_generation_config_and_prefix_sizes(small_study):
    plan = expand(load_study(small_study()))
    packs = plan.of_kind("pack")
    assert len(packs) == 2  # real pool + one guidance value
    trains = plan.of_kind("train")
    assert {t.spec["images_per_class"] for t in trains} == {4, 8, 16}
    assert all(len(t.inputs) == 1 and plan.by_id[t.inputs[0]].kind == "pack" for t in trains)
    gens = plan.of_kind("generate")
    assert sorted(tuple(g.spec["classes"]) for g in gens) == [(0, 5), (5, 10)]
    assert {tuple(g.spec["indices"]) for g in gens} == {(0, 16)}  # the largest size, once


def test_image_seeds_depend_on_study_class_and_index_only():
    assert image_seed(0, 3, 7) == image_seed(0, 3, 7)
    seeds = {image_seed(s, c, i) for s in range(2) for c in range(3) for i in range(50)}
    assert len(seeds) == 300 and all(0 <= x < 2**63 for x in seeds)


def test_in_captions_plans_one_caption_stage_per_class_range_shared_by_configs():
    from conftest import ROOT
    s = load_study(ROOT / "studies/imagen_sweep.toml")
    s = replace(s, prompts=replace(s.prompts, captions=""))  # caption the real images instead
    plan = expand(s)
    captions = plan.of_kind("caption")
    assert len(captions) == 100  # 1,000 classes, 10 per stage
    assert {tuple(c.spec["classes"]) for c in captions} == {(lo, lo + 10) for lo in range(0, 1000, 10)}
    by_range = {tuple(c.spec["classes"]): c.id for c in captions}
    readers = [g for g in plan.of_kind("generate") if g.spec["prompts"] == "in-captions"]
    # 100 class ranges x 4 index ranges (images_per_task) per config, one pool per config
    assert len(readers) == 100 * 4 * len(s.generate.guidance)
    assert len({g.content for g in readers}) == len(s.generate.guidance)
    assert all(g.inputs == (by_range[tuple(g.spec["classes"])],) for g in readers)
    assert all(not g.inputs for g in plan.of_kind("generate") if g.spec["prompts"] != "in-captions")
    plan.order()  # every caption stage is planned before its readers
    # with a captions file there is nothing to caption
    assert not expand(load_study(ROOT / "studies/imagen_sweep.toml")).of_kind("caption")


def test_growing_a_study_keeps_every_finished_training_and_evaluation_id(small_study):
    """Identity is content: a training hashes what its packs hold (a generation
    config, n images per class), not the pack that carries them, so larger sizes,
    a repeat and other layout knobs leave every planned training as it was."""
    s = load_study(small_study())
    base = expand(s)
    grown = replace(s, sweep=replace(s.sweep, synthetic_images_per_class=(4, 8, 16, 32),
                                     real_images_per_class=(4, 8, 16, 24),
                                     repeats={"8": 2}),
                    generate=replace(s.generate, classes_per_task=3, batch_size=4,
                                     shard_images=8))
    after = expand(grown)
    ids = {x.id for x in after.stages}
    for kind in ("train", "evaluate"):
        assert {x.id for x in base.of_kind(kind)} <= ids, kind
    new = [x for x in after.of_kind("train") if x.id not in {t.id for t in base.stages}]
    assert sorted((t.axes["source"], t.spec["images_per_class"]) for t in new) == [
        ("real", 8), ("real", 24), ("synthetic", 8), ("synthetic", 32)]  # 8: the repeat
    # the synthetic pack grew (new id, so it is packed again), holding the same content
    (old,), (pack,) = ([p for p in plan.of_kind("pack") if p.spec["source"] == "synthetic"]
                       for plan in (base, after))
    assert pack.id != old.id and pack.content == old.content
    assert pack.spec["per_class"] == 32 and old.spec["per_class"] == 16
    # every chunk of a config, however cut, holds that config
    contents = {g.content for plan in (base, after) for g in plan.of_kind("generate")}
    assert len(contents) == 1 and len(after.of_kind("generate")) == 4  # classes by 3
    # layout alone (batch, shard size) changes no id at all
    layout = expand(replace(s, generate=replace(s.generate, batch_size=4, shard_images=8)))
    assert [x.id for x in layout.stages] == [x.id for x in base.stages]
