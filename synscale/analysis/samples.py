"""The images behind the curves: which generated (and real) images a
sample grid shows, read one by one from the generate stages' shards.

A grid holds, for a few classes, the first few images of each class in
every generation config of one generator, beside the real images of the
same classes: image i of class c has the same seed in every config
(hashing.image_seed), so two groups differ by their axes and nothing else.
Only the images shown are read (data/shards.Shard.image seeks to one
image's bytes), so a grid costs the same for 100 images a class as for
10,000. Curation samples are the lowest- and highest-scoring rows of each
curated pack, found in its scores.npz and read from the same shards.

report/samples.py draws both; results.py writes them under results/plots/.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synscale.plan import state
from synscale.plan.graph import Plan, Stage
from synscale.plan.layout import RunDir

MAX_CLASSES = 10    # more classes than this: MAX_CLASSES drawn by the study seed
PER_CLASS = 3       # image indices per class, fewer when there are many configs
MAX_ROWS = 60       # thumbnail rows per figure (groups x indices), which bounds its size
GENERATED_AXES = ("generator", "prompts", "guidance")


@dataclass
class Group:
    label: str                  # the axes this group differs in ("real", "guidance=1.0")
    config: dict                # every generation axis ({} for real images)
    cells: list[list]           # [index row][class column]: an image array, or None
    missing: str = ""           # why cells are None (shards released, not yet rendered)


@dataclass
class SampleGrid:
    title: str                  # what every group shares (generator, ...)
    classes: list[str]          # column names
    class_indices: list[int]
    indices: list[int]          # the image indices shown of every class, one row each
    groups: list[Group] = field(default_factory=list)

    def layout(self) -> dict:
        """What was drawn where (also written into the PNG's metadata)."""
        return {"title": self.title, "classes": self.classes, "class_indices": self.class_indices,
                "indices": self.indices,
                "groups": [{"label": g.label, "config": g.config, "missing": g.missing,
                            "drawn": [[c is not None for c in row] for row in g.cells]}
                           for g in self.groups]}


@dataclass
class CurationGroup:
    label: str                  # the generation config of the pack
    score: str                  # the score column the filters read
    filters: list[str]          # "recognizability>=0.999 keeps 82%" per filter on it
    lowest: list[tuple]         # (score, image or None, class name, index), lowest first
    highest: list[tuple]


@dataclass
class SafetyCount:
    label: str
    flagged: int
    rows: int


def _configs(plan: Plan) -> list[tuple[Stage, list[Stage], dict]]:
    """(synthetic pack, its generate stages, generation axes) in plan order."""
    out = []
    for pack in plan.of_kind("pack"):
        if pack.spec["source"] != "synthetic":
            continue
        gens = [plan.by_id[i] for i in pack.inputs if plan.by_id[i].kind == "generate"]
        first = gens[0].spec
        out.append((pack, gens, {k: first[k] for k in GENERATED_AXES}))
    return out


def _varying(configs: list[dict]) -> list[str]:
    """The generation axes whose value differs between these configs."""
    return [k for k in GENERATED_AXES if len({str(c[k]) for c in configs}) > 1]


def _label(config: dict, varying: list[str]) -> str:
    return ", ".join(f"{k}={config[k]}" for k in varying) or "generated"


def pick_classes(n: int, seed: int) -> list[int]:
    """All classes when there are at most MAX_CLASSES, else MAX_CLASSES drawn by the seed."""
    if n <= MAX_CLASSES:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, MAX_CLASSES, replace=False).tolist())


def sample_grids(run: RunDir, plan: Plan, seed: int) -> list[SampleGrid]:
    """One grid per generator (all its configs), each with the real images first."""
    from synscale.prompts.classes import of_data
    from synscale.study.specs import DataSpec, parse

    configs = _configs(plan)
    if not configs:
        return []
    data = parse(DataSpec, configs[0][1][0].spec["data"])
    names = of_data(data)
    chosen = pick_classes(len(names), seed)
    out, opened = [], {}
    for generator in dict.fromkeys(axes["generator"] for _, _, axes in configs):
        mine = [c for c in configs if c[2]["generator"] == generator]
        varying = _varying([a for _, _, a in mine])
        largest = min(max(g.spec["indices"][1] for g in gens) for _, gens, _ in mine)
        k = max(1, min(PER_CLASS, MAX_ROWS // (len(mine) + 1), largest))
        indices = list(range(k))
        grid = SampleGrid(f"generator={generator}" + "".join(
            f", {x}={mine[0][2][x]}" for x in GENERATED_AXES[1:] if x not in varying),
            [names[c].name for c in chosen], chosen, indices)
        grid.groups.append(_real_group(data, names, chosen, indices))
        for _, gens, axes in mine:
            grid.groups.append(_generated_group(run, gens, axes, _label(axes, varying),
                                                chosen, indices, opened))
        out.append(grid)
    return out


def _real_group(data, names, chosen: list[int], indices: list[int]) -> Group:
    """The real pack's first images of each class, from their source."""
    if data.dataset == "digits":
        from synscale.data.digits import load_split
        split = load_split(data.split_seed, data.test_per_class)
        order = np.argsort(split.train_y, kind="stable")  # the real pack's row order
        x, y = split.train_x[order], split.train_y[order]
        starts = {c: int(np.argmax(y == c)) for c in chosen}
        cells = [[x[starts[c] + i] if i < int((y == c).sum()) else None for c in chosen]
                 for i in indices]
        return Group("real", {}, cells)
    from synscale.data.folders import class_key, images_of
    files = {c: images_of(data.train_dir, class_key(names[c]), len(indices), at_most=True)
             for c in chosen}
    cells = [[_read_file(files[c][i]) if i < len(files[c]) else None for c in chosen]
             for i in indices]
    return Group("real", {}, cells)


def _read_file(path: Path) -> np.ndarray | None:
    """A thumbnail (a photo need not be held whole); None, an empty cell,
    for a file that does not decode."""
    from PIL import Image

    from synscale.data.decode import BadImage, rgb
    try:
        im = Image.fromarray(rgb(path))
    except BadImage:
        return None
    im.thumbnail((256, 256))
    return np.asarray(im)


def _generated_group(run: RunDir, gens: list[Stage], axes: dict, label: str,
                     chosen: list[int], indices: list[int], opened: dict) -> Group:
    cells = [[_image(run, gens, c, i, opened) for c in chosen] for i in indices]
    missing = ""
    if any(cell is None for row in cells for cell in row):
        released = any(state.is_released(run.stage("generate", g.id)) for g in gens)
        missing = "shards released ([generate] keep_shards = false)" if released else \
            "not rendered yet"
    return Group(label, dict(axes), cells, missing)


def _image(run: RunDir, gens: list[Stage], c: int, i: int, opened: dict):
    """Image i of class c of a generation config, or None where no shard of its
    pool holds it. `opened`: a class's shards ((first, stop, path), listed once)
    and path -> Shard, so that a shard's header is read once for all the images
    a figure takes from it."""
    from synscale.data.shards import Shard, covered
    pool = run.pool(gens[0].content_key) if gens else None
    if pool is None or (pool, c) not in opened:
        opened[(pool, c)] = covered(pool, c) if pool is not None and pool.is_dir() else []
    for first, stop, path in opened[(pool, c)]:
        if first <= i < stop:
            if path not in opened:
                opened[path] = Shard(path)
            return opened[path].image(i - first)
    return None


def curation_samples(run: RunDir, plan: Plan, per_end: int = 6) -> tuple[list, list]:
    """For every curated synthetic pack and score: its lowest- and highest-scoring
    rows (images read from the shards); and the safety checker's counts."""
    from synscale.prompts.classes import of_data
    from synscale.stages.curate import read_scores
    from synscale.study.curation import rule_label
    from synscale.study.specs import DataSpec, RuleSpec, parse

    configs = {pack.id: (gens, axes) for pack, gens, axes in _configs(plan)}
    # a figure of its own has no title naming the config: one config says all of it
    varying = _varying([axes for _, axes in configs.values()]) or list(GENERATED_AXES)
    opened: dict = {}
    rules: dict[tuple, list] = {}
    for cur in plan.of_kind("curate"):
        pack_id = cur.inputs[0]
        if pack_id not in configs:
            continue  # a snapshot of the real pack: nothing generated to show
        rule = parse(RuleSpec, cur.spec["rule"], "rule")
        key = (pack_id, "nsfw" if rule.kind == "safety" else rule.score)
        rules.setdefault(key, []).append((rule, cur))
    groups, safety = [], []
    for (pack_id, column), found in rules.items():
        gens, axes = configs[pack_id]
        label = _label(axes, varying)
        scores = read_scores(run.stage("pack", pack_id)).get(column)
        if scores is None:
            continue  # the pack is not packed yet
        if column == "nsfw":
            safety.append(SafetyCount(label, int(scores.sum()), int(scores.size)))
            continue
        index = state.read_json(run.stage("pack", pack_id) / "index.json")
        names = [c.name for c in of_data(parse(DataSpec, gens[0].spec["data"]))]
        offsets = np.asarray(index["class_offsets"])
        order = np.argsort(scores, kind="stable")
        filters = []
        for rule, cur in found:
            folder = run.stage("curate", cur.id)
            kept = state.read_json(folder / "manifest.json")["share_kept"] \
                if state.is_done(folder) else None
            filters.append(rule_label(rule) + ("" if kept is None else f" keeps {kept:.0%}"))
        groups.append(CurationGroup(
            label, column, filters,
            [_row(run, gens, offsets, names, scores, r, opened) for r in order[:per_end]],
            [_row(run, gens, offsets, names, scores, r, opened) for r in order[::-1][:per_end]]))
    return groups, safety


def _row(run: RunDir, gens: list[Stage], offsets: np.ndarray, names: list[str], scores, r,
         opened: dict):
    """(score, image, class name, index) of pack row r: rows run by (class, index)."""
    c = int(np.searchsorted(offsets, r, side="right") - 1)
    i = int(r - offsets[c])
    return float(scores[r]), _image(run, gens, c, i, opened), names[c], i
