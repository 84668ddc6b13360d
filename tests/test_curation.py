"""Curation: filters select rows of a pack by index (exact shares, the
inverse keeps the complement), mixtures hit their ratios per class,
leave-one-out expands to the right pools, and a changed threshold re-runs
only what depends on it."""
import logging

import numpy as np
import pytest

from conftest import SMALL_STUDY, run_module
from synscale.data.digits import load_split
from synscale.data.ffcv_io import write_beton
from synscale.plan import state
from synscale.plan.graph import Stage
from synscale.runtime.harness import StageContext
from synscale.stages import curate
from synscale.study.expand import expand
from synscale.study.load import load_study
from synscale.study.schema import TrainSection
from synscale.study.specs import ModelSpec, TrainSpec, wire


def _pack(folder, per_class=(30, 20, 10), seed=0):
    """A pack of digits with a recognizability score per row."""
    split = load_split(0, 45)
    picks = np.concatenate([np.flatnonzero(split.train_y == c)[:n] for c, n in enumerate(per_class)])
    folder.mkdir(parents=True, exist_ok=True)
    write_beton(folder, split.train_x[picks], split.train_y[picks])
    scores = np.random.default_rng(seed).random(len(picks))
    from synscale.stages.pack import write_scores
    write_scores(folder, {"recognizability": scores})
    return scores


def _curate(tmp_path, pack, rule, name):
    stage = Stage(name, "curate", {"rule": rule}, ("pack",))
    folder = tmp_path / name
    folder.mkdir()
    ctx = StageContext(stage, folder, {"pack": pack}, {"pack": "pack"}, logging.getLogger(name))
    curate.run(ctx)
    return np.load(folder / "kept.npy"), state.read_json(folder / "manifest.json")


def test_filter_shares_are_exact_and_the_inverse_keeps_the_complement(tmp_path):
    scores = _pack(tmp_path / "pack")
    rule = {"kind": "quality", "score": "recognizability", "threshold": 0.6, "inverse": False}
    kept, m = _curate(tmp_path, tmp_path / "pack", rule, "keep")
    assert np.array_equal(kept, scores >= 0.6)
    assert m["kept"] == int((scores >= 0.6).sum()) and m["share_kept"] == (scores >= 0.6).mean()
    labels = np.repeat([0, 1, 2], [30, 20, 10])
    for c, n in enumerate((30, 20, 10)):
        assert m["kept_per_class"][c] == int((scores[labels == c] >= 0.6).sum())
        assert m["share_kept_per_class"][c] == m["kept_per_class"][c] / n
    inverse, mi = _curate(tmp_path, tmp_path / "pack", {**rule, "inverse": True}, "inverse")
    assert not (kept & inverse).any() and (kept | inverse).all()
    assert m["kept"] + mi["kept"] == 60
    # a rule on a score the pack lacks names what it has
    with pytest.raises(ValueError, match="no 'nsfw' per image .*safety checker.*recognizability"):
        _curate(tmp_path, tmp_path / "pack", {"kind": "safety"}, "safety")


def test_a_mixture_hits_its_ratio_in_every_class_and_a_filter_applies_to_the_prefix(tmp_path):
    from synscale.stages.train import _parts

    _pack(tmp_path / "real", per_class=(40, 40, 40))
    scores = _pack(tmp_path / "synthetic", per_class=(40, 40, 40), seed=1)
    rule = {"kind": "quality", "score": "recognizability", "threshold": 0.5, "inverse": False}
    _curate(tmp_path, tmp_path / "synthetic", rule, "cur")
    for n, shares in ((16, [0.75, 0.25]), (10, [0.5, 0.5]), (12, [0.25, 0.75])):
        spec = wire(TrainSpec(ModelSpec("vit"), TrainSection(), n, 3, 0, tuple(shares)))
        stage = Stage("t", "train", spec, ("real", "synthetic"))
        ctx = StageContext(stage, tmp_path, {"real": tmp_path / "real",
                                             "synthetic": tmp_path / "synthetic"},
                           {"real": "pack", "synthetic": "pack"}, logging.getLogger("t"))
        parts, _, info = _parts(ctx, micro=16 if shares[0] != 0.5 else 8)
        for part, share in zip(parts, shares):
            per_class = np.bincount(np.searchsorted([0, 40, 80], part.rows, side="right") - 1)
            assert per_class.tolist() == [round(n * share)] * 3
        assert [p.micro for p in parts] == [int(m * s) for m, s in
                                            zip([16 if shares[0] != 0.5 else 8] * 2, shares)]
        # the same mixture with its generated part filtered: the kept rows of its prefix
        stage = Stage("t", "train", spec, ("real", "synthetic", "cur"))
        ctx = StageContext(stage, tmp_path, {"real": tmp_path / "real",
                                             "synthetic": tmp_path / "synthetic",
                                             "cur": tmp_path / "cur"},
                           {"real": "pack", "synthetic": "pack", "cur": "curate"},
                           logging.getLogger("t"))
        parts, _, info = _parts(ctx, micro=16 if shares[0] != 0.5 else 8)
        prefix = np.concatenate([np.arange(o, o + round(n * shares[1])) for o in (0, 40, 80)])
        assert np.array_equal(parts[1].rows, prefix[scores[prefix] >= 0.5])
        assert info[1]["kept_share"] == pytest.approx((scores[prefix] >= 0.5).mean())


CURATED = SMALL_STUDY.replace(
    'sources = ["real", "synthetic"]',
    'sources = ["real", "synthetic", "mixture"]\nmixture_images_per_class = [8, 16]\n'
    'synthetic_shares = [0.25, 0.5]').replace(
    "guidance = [1.0]", "guidance = [0.0, 1.0, 4.0]").replace(
    "[backend]", '[curate]\nthresholds = [0.99, 0.999]\ninverse = true\n'
                 'applies_to = ["synthetic", "mixture"]\n{extra}\n[backend]')


def _study(tmp_path, name="cur", extra="", **edits):
    text = CURATED.format(name=name, workers=2, extra=extra)
    for old, new in edits.items():
        text = text.replace(old, new)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_study(path)


def test_leave_one_out_expands_to_the_pool_and_each_ablation(tmp_path):
    # a batch of 48 splits into thirds and halves (the pool and its ablations)
    plan = expand(_study(tmp_path, extra='leave_one_out = ["real", "guidance=0.0", "guidance=4.0"]',
                         **{"batch_size = 32": "batch_size = 48"}))
    # a pool without one generated source is the 50% mixture of the other: one
    # training, planned once, that reports under both (Stage.also)
    by_label = {}
    for t in plan.of_kind("train"):
        for axes in (t.axes, *t.also):
            if axes["source"] == "pool":
                by_label.setdefault(axes["curation"], []).append(t)
    assert len({s.id for s in plan.stages}) == len(plan.stages)
    assert set(by_label) == {"all", "without real", "without guidance=0.0", "without guidance=4.0"}
    packs = {p.id: p for p in plan.of_kind("pack")}
    generation = {g.id: g.spec["guidance"] for g in plan.of_kind("generate")}

    def sources_of(train):
        out = []
        for i in train.inputs:
            p = packs[i]
            out.append("real" if p.spec["source"] == "real" else
                       f"guidance={generation[p.inputs[0]]}")
        return out

    for label, trains in by_label.items():
        assert {t.spec["images_per_class"] for t in trains} == {8, 16}
        for t in trains:
            expected = [s for s in ("real", "guidance=0.0", "guidance=4.0")
                        if label != f"without {s}"]
            assert sources_of(t) == expected
            assert t.spec["shares"] == [1 / len(expected)] * len(expected)
    bad = tmp_path / "bad.toml"
    bad.write_text(CURATED.format(name="bad", workers=2,
                                  extra='leave_one_out = ["real", "guidance=2.0"]')
                   .replace("batch_size = 32", "batch_size = 48"))
    r = run_module("synscale.launch", bad, "--dry-run", "--root", tmp_path / "runs")
    assert r.returncode == 2 and "'guidance=2.0' matches 0 generation configs" in r.stderr
    # a blend that is one of the pools is one training, reported under both names
    plan = expand(_study(tmp_path, "same", extra=(
        'leave_one_out = ["real", "guidance=0.0", "guidance=4.0"]\n[curate.blends]\n'
        'half = { "guidance=0.0" = 0.5, "guidance=4.0" = 0.5 }'),
        **{"batch_size = 32": "batch_size = 48"}))
    assert len({s.id for s in plan.stages}) == len(plan.stages)
    (blend,) = [t for t in plan.of_kind("train") if t.axes["curation"] == "blend:half"
                and t.axes["images_per_class"] == 16]
    assert [a["curation"] for a in blend.also] == ["without real"]


def _threshold_of(stage):
    """The filter threshold a stage depends on, or None."""
    if stage.kind == "curate":
        return stage.spec["rule"].get("threshold")
    label = stage.axes.get("curation") or ""
    for op in (">=", "<"):
        if op in label:
            return float(label.split(op)[1])
    return None


def test_changing_a_threshold_reruns_only_what_depends_on_it(tmp_path):
    before = expand(_study(tmp_path))
    after = expand(_study(tmp_path, "cur", **{"thresholds = [0.99, 0.999]":
                                              "thresholds = [0.99, 0.9999]"}))
    old = {s.id: s for s in before.stages}
    new = {s.id: s for s in after.stages}
    added = [new[i] for i in set(new) - set(old)]
    dropped = [old[i] for i in set(old) - set(new)]
    assert added and {_threshold_of(s) for s in added} == {0.9999}
    assert dropped and {_threshold_of(s) for s in dropped} == {0.999}
    # generation, packs, the unfiltered and the 0.99 trainings keep their ids: not re-run
    assert {s.kind for s in added} == {"curate", "train", "evaluate"}
    assert sum(_threshold_of(s) == 0.99 for s in after.stages) == \
        sum(_threshold_of(s) == 0.99 for s in before.stages) > 0
    # filters apply to generated packs only: a curated mixture reads real, synthetic, its curate
    mixed = [t for t in before.of_kind("train")
             if t.axes["source"] == "mixture" and t.axes["curation"]]
    kinds = {s.id: s.kind for s in before.stages}
    assert mixed and all([kinds[i] for i in t.inputs] == ["pack", "pack", "curate"] for t in mixed)


@pytest.mark.slow
def test_reduced_curation_study_reports_deltas_with_the_share_kept(tmp_path):
    study = tmp_path / "cur.toml"
    study.write_text(CURATED.format(name="cur", workers=2, extra="").replace(
        "guidance = [0.0, 1.0, 4.0]", "guidance = [0.0]").replace(
        "thresholds = [0.99, 0.999]", "thresholds = [0.999]").replace(
        "real_images_per_class = [4, 8, 16]", "real_images_per_class = [16]").replace(
        "synthetic_images_per_class = [4, 8, 16]", "synthetic_images_per_class = [16, 32]").replace(
        "mixture_images_per_class = [8, 16]", "mixture_images_per_class = [16]").replace(
        "synthetic_shares = [0.25, 0.5]", "synthetic_shares = [0.5]"))
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs/cur"
    fits = state.read_json(run / "results/fits.json")
    deltas = fits["curation"]
    labels = {(d["source"], d["curation"], d["images_per_class"]) for d in deltas}
    assert ("synthetic", "recognizability>=0.999", 32) in labels
    assert ("synthetic", "recognizability<0.999", 32) in labels
    assert ("mixture", "recognizability<0.999", 16) in labels
    for d in deltas:
        assert d["baseline"] == "unfiltered" and 0 < d["kept_share"] < 1
    # a filter and its inverse split the generated images of one budget between them
    syn = {d["curation"]: d for d in deltas if d["source"] == "synthetic"
           and d["images_per_class"] == 32}
    assert syn["recognizability>=0.999"]["kept_share"] + \
        syn["recognizability<0.999"]["kept_share"] == pytest.approx(1.0)
    summary = (run / "results/summary.md").read_text()
    assert "Curation: change against the unfiltered set" in summary


def test_a_snapshot_keeps_the_real_images_dated_up_to_its_year(tmp_path):
    """Data age: the real pack dates each image from the metadata file, and a
    snapshot keeps those up to its year."""
    from conftest import class_folders
    from synscale.stages import pack

    wnids = ("n01440764", "n01443537")
    class_folders(tmp_path / "train", wnids, 3)
    (tmp_path / "classes.txt").write_text("\n".join(wnids) + "\n")
    years = {f"{w}/{w}_{i}.JPEG": 2010 + 3 * i + k for k, w in enumerate(wnids) for i in range(3)}
    (tmp_path / "meta.csv").write_text("image,timestamp\n" + "".join(
        f"{k},{y}-06-30T12:00:00\n" for k, y in years.items()))
    data = {"dataset": "imagefolder", "train_dir": str(tmp_path / "train"), "val_dir": "",
            "classes": str(tmp_path / "classes.txt"), "metadata": str(tmp_path / "meta.csv")}
    stage = Stage("real", "pack", {"source": "real", "data": data, "resolution": 16,
                                   "per_class": 3}, ())
    (tmp_path / "real").mkdir()
    pack.run(StageContext(stage, tmp_path / "real", {}, {}, logging.getLogger("pack")))
    kept, m = _curate(tmp_path, tmp_path / "real", {"kind": "snapshot", "year": 2014}, "snap")
    # rows in class order, files in name order: 2010, 2013, 2016 | 2011, 2014, 2017
    assert kept.tolist() == [True, True, False, True, True, False]
    assert m["kept_per_class"] == [2, 2] and m["share_kept"] == pytest.approx(4 / 6)
    # a metadata file that misses an image names it
    (tmp_path / "meta.csv").write_text("image,timestamp\n" + f"{wnids[0]}/{wnids[0]}_0.JPEG,2010\n")
    (tmp_path / "real2").mkdir()
    with pytest.raises(ValueError, match=r"5 of the 6 packed .* no timestamp"):
        pack.run(StageContext(stage, tmp_path / "real2", {}, {}, logging.getLogger("pack")))
