"""Sample grids: the images behind the curves, read from the shards one by
one, laid out so that generation configs differ by their axes alone."""
import numpy as np
import pytest

from conftest import SMALL_STUDY, read_generated
from synscale.analysis import samples
from synscale.data import shards
from synscale.plan import state
from synscale.plan.hashing import image_seed
from synscale.plan.layout import RunDir
from synscale.report.samples import plot_curation, plot_samples, read_layout
from synscale.runtime.harness import execute
from synscale.study.expand import expand
from synscale.study.load import load_study

STUDY = SMALL_STUDY.replace("guidance = [1.0]", "guidance = [0.0, 4.0]\nshard_images = 2") \
    .replace("batch_size = 8", "batch_size = 2") \
    .replace("steps = 20", "steps = 4").replace(
        "[backend]", '[curate]\nthresholds = [0.99]\napplies_to = ["synthetic"]\n\n[backend]')


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A run of the small study with its generation, packs and curation done
    (no training: the grids need none)."""
    tmp = tmp_path_factory.mktemp("samples")
    path = tmp / "s.toml"
    path.write_text(STUDY.format(name="s", workers=1))
    plan = expand(load_study(path))
    run = RunDir(tmp / "runs" / "s")
    for stage in plan.stages:
        if stage.kind in ("generate", "pack", "curate"):
            execute(str(run.root), stage, {i: plan.by_id[i].kind for i in stage.inputs})
    return run, plan


def _config_folders(run, plan):
    """guidance -> the folders of its generate stages."""
    out = {}
    for g in plan.of_kind("generate"):
        out.setdefault(g.spec["guidance"], []).append(run.stage("generate", g.id))
    return out


def test_the_grid_shows_the_same_classes_and_indices_in_every_config(made, tmp_path, monkeypatch):
    run, plan = made
    reads = []
    real_image = shards.Shard.image
    monkeypatch.setattr(shards.Shard, "image", lambda self, i: reads.append(i) or
                        real_image(self, i))
    monkeypatch.setattr(shards.Shard, "encoded", lambda self: pytest.fail("a whole shard read"))
    (grid,) = samples.sample_grids(run, plan, seed=0)
    assert len(reads) == 2 * 3 * 10  # only the images shown: two configs, 3 indices, 10 classes
    assert grid.title == "generator=embedded-ddpm, prompts=classnames"
    assert grid.classes == [f"digit {c}" for c in range(10)] and grid.class_indices == [*range(10)]
    assert grid.indices == [0, 1, 2]
    assert [g.label for g in grid.groups] == ["real", "guidance=0.0", "guidance=4.0"]
    assert [g.config.get("guidance") for g in grid.groups] == [None, 0.0, 4.0]
    for group in grid.groups[1:]:  # cell (i, c) is image i of class c, seeded by (seed, c, i)
        made_ = read_generated(*_config_folders(run, plan)[group.config["guidance"]])
        where = {(int(c), int(i)): k for k, (c, i) in
                 enumerate(zip(made_["labels"], made_["indices"]))}
        for i, row in zip(grid.indices, group.cells):
            for c, cell in zip(grid.class_indices, row):
                k = where[(c, i)]
                assert made_["seeds"][k] == image_seed(0, c, i)
                assert np.array_equal(cell, made_["images"][k])
    from synscale.data.digits import load_split
    split = load_split(0, 45)
    for i, row in zip(grid.indices, grid.groups[0].cells):  # the real pack's first images
        for c, cell in zip(grid.class_indices, row):
            assert np.array_equal(cell, split.train_x[split.train_y == c][i])
    # the figure says what it drew
    path = plot_samples(grid, tmp_path / "samples.png")
    import os
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as the other results
    layout = read_layout(path)
    assert layout == grid.layout()
    assert [g["label"] for g in layout["groups"]] == ["real", "guidance=0.0", "guidance=4.0"]
    assert all(all(row) and len(row) == 10 for g in layout["groups"] for row in g["drawn"])


def test_released_shards_leave_their_config_blank_and_say_why(made, tmp_path):
    import shutil
    run, plan = made
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    for folder in _config_folders(copy, plan)[4.0]:
        state.release(folder, shards.paths(folder), "packed")
    (grid,) = samples.sample_grids(copy, plan, seed=0)
    released = grid.groups[2]
    assert all(cell is None for row in released.cells for cell in row)
    assert "keep_shards = false" in released.missing
    assert all(cell is not None for row in grid.groups[1].cells for cell in row)
    assert read_layout(plot_samples(grid, tmp_path / "s.png"))["groups"][2]["drawn"] == \
        [[False] * 10] * 3


def test_curation_shows_each_filter_its_lowest_and_highest_scoring_images(made, tmp_path):
    from synscale.stages.curate import read_scores
    run, plan = made
    groups, safety = samples.curation_samples(run, plan, per_end=4)
    assert safety == [] and [g.label for g in groups] == ["guidance=0.0", "guidance=4.0"]
    packs = {p.inputs and plan.by_id[p.inputs[0]].spec["guidance"]: p
             for p in plan.of_kind("pack") if p.spec["source"] == "synthetic"}
    for g in groups:
        assert g.score == "recognizability"
        assert len(g.filters) == 1 and g.filters[0].startswith("recognizability>=0.99 keeps ")
        guidance = float(g.label.split("=")[1])
        scores = np.sort(read_scores(run.stage("pack", packs[guidance].id))["recognizability"])
        assert [s for s, *_ in g.lowest] == pytest.approx(scores[:4].tolist())
        assert [s for s, *_ in g.highest] == pytest.approx(scores[::-1][:4].tolist())
        made_ = read_generated(*_config_folders(run, plan)[guidance])
        for _, image, name, i in [*g.lowest, *g.highest]:
            c = int(name.split()[-1])
            k = np.flatnonzero((made_["labels"] == c) & (made_["indices"] == i))[0]
            assert np.array_equal(image, made_["images"][k])
    layout = read_layout(plot_curation(groups, [samples.SafetyCount("generator=sd", 3, 1000)],
                                       tmp_path / "curation.png"))
    assert [g["label"] for g in layout["groups"]] == ["guidance=0.0", "guidance=4.0"]
    assert layout["safety"] == [{"label": "generator=sd", "flagged": 3, "rows": 1000}]
    assert layout["groups"][0]["lowest"][0][0] == pytest.approx(groups[0].lowest[0][0])


def test_the_results_link_the_grids(made, tmp_path):
    from synscale.results import _sample_figures, analyze_rows
    run, plan = made
    figures = _sample_figures(run, plan, 0, console=None)
    assert [f.name for f in figures] == ["samples.png", "curation.png"]
    rows = [{"source": "real", "eval_set": "digits-test", "images_per_class": n, "loss": 2.0 / n,
             "top1": 0.5} for n in (4, 8, 16, 32)]
    analyze_rows(rows, tmp_path, figures=figures)
    md = (tmp_path / "summary.md").read_text()
    assert "## Samples\n\n![samples](plots/samples.png)\n\n![curation](plots/curation.png)" in md


def test_many_classes_are_ten_drawn_by_the_seed():
    picked = samples.pick_classes(1000, seed=0)
    assert len(picked) == 10 == len(set(picked)) and picked == sorted(picked)
    assert picked == samples.pick_classes(1000, seed=0) != samples.pick_classes(1000, seed=1)
    assert samples.pick_classes(7, seed=3) == list(range(7))


def test_a_large_grid_stays_a_few_megabytes(tmp_path):
    """The real images and 25 configs (imagen_sweep's 6 prompts x 4 guidance
    values, and one more), of noise: what PNG compresses worst."""
    rng = np.random.default_rng(0)
    grid = samples.SampleGrid("generator=imagen", [f"class {c}" for c in range(10)],
                              list(range(10)), [0, 1])
    grid.groups = [samples.Group(f"config {k}", {"guidance": float(k)},
                                 [[rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                                   for _ in range(10)] for _ in range(2)]) for k in range(26)]
    path = plot_samples(grid, tmp_path / "big.png")
    assert path.stat().st_size < 4.5e6
    from PIL import Image
    with Image.open(path) as im:
        assert im.size[1] > 26 * 2 * 16  # every row drawn, thumbnails at least 16 px
