"""The contract between the planner and the runners (study/specs.py): every
spec the shipped studies plan, and a variant of them that turns on what
they leave off (caption stages, released shards, scores, dated metadata),
reads back as its kind's type with the right types; every attribute a
runner, or a helper it hands a typed spec to, reads off a spec is a field
of that spec's type; and every such field is one the planner writes. A
renamed or retyped field fails here, not when a job runs on the cluster.
The reads are found in the source (ast), so one on a rare path counts too."""
import ast
import typing
from collections import defaultdict
from dataclasses import fields, is_dataclass

import pytest

from conftest import ROOT
from synscale.plan.graph import KINDS
from synscale.study import specs
from synscale.study.expand import expand
from synscale.study.load import load_study
from synscale.study.schema import TrainSection

# the types a name can be annotated with, by name
TYPES = {cls.__name__: cls for cls in (
    *specs.SPECS.values(), specs.DataSpec, specs.ModelSpec, specs.PromptOptionsSpec,
    specs.Word2SenSpec, specs.PackCaptionsSpec, specs.RuleSpec, TrainSection)}

# Fields a runner reads that the planner never writes, with why that is right.
NOT_PLANNED = {
    ("pack", ("workers",)): "tools/bench_pack.py sets the writer's processes; a planned pack "
                            "uses the CPUs its job was given",
}


def _unwrap(hint):
    """The spec type inside `X | None`, or None when the hint is no spec type."""
    for option in typing.get_args(hint) or (hint,):
        if is_dataclass(option):
            return option
    return None


def _step(cls, name: str):
    """(wire key, the field's spec type or None); KeyError when `name` is no field."""
    by_name = {f.name: f for f in fields(cls)}
    if name not in by_name:
        raise KeyError(name)
    return specs._key(by_name[name]), _unwrap(typing.get_type_hints(cls)[name])


class _Reads(ast.NodeVisitor):
    """Attribute chains read off names of known spec types, per module:
    parameters and assignments annotated with a spec type, `ctx.spec` in a
    runner, `self.x` set from one in __init__, and names bound to a chain."""

    def __init__(self, runner_kind: str | None):
        self.runner = specs.SPECS.get(runner_kind)
        self.reads: set[tuple] = set()    # (root type name, wire key path)
        self.unknown: list[str] = []      # "Type.attr" reads of no field
        # name -> (its type, (root type name, key path it was read at))
        self.scopes: list[dict] = [{}]
        self.selfs: dict[str, tuple] = {}

    def _type_of(self, node):
        """(spec type, (root, key path)) of an expression, recording the chain it reads."""
        if isinstance(node, ast.Name):
            for scope in reversed(self.scopes):
                if node.id in scope:
                    return scope[node.id]
            return None
        if isinstance(node, ast.BoolOp):  # spec.captions or PackCaptionsSpec(), p and p.x
            found = [self._type_of(v) for v in node.values]
            return next((f for f in reversed(found) if f and f[0]), None)
        if not isinstance(node, ast.Attribute):
            return None
        if isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in self.selfs:
            return self.selfs[node.attr]
        if node.attr == "spec" and self.runner and isinstance(node.value, ast.Name) \
                and node.value.id == "ctx":
            return self.runner, (self.runner.__name__, ())
        inner = self._type_of(node.value)
        if inner is None or inner[0] is None:
            return None
        cls, (root, path) = inner
        try:
            key, nested = _step(cls, node.attr)
        except KeyError:
            self.unknown.append(f"{cls.__name__}.{node.attr} (line {node.lineno})")
            return None
        self.reads.add((root, (*path, key)))
        return nested, (root, (*path, key))

    def _bind(self, target, value, annotation=None):
        found = self._type_of(value) if value is not None else None
        if not (found and found[0]):
            name = getattr(annotation, "id", None)
            found = (TYPES[name], (name, ())) if name in TYPES else None
        if found is None:
            return
        if isinstance(target, ast.Name):
            self.scopes[-1][target.id] = found
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and target.value.id == "self":
            self.selfs[target.attr] = found

    def visit_FunctionDef(self, node):
        scope = {}
        for arg in [*node.args.args, *node.args.kwonlyargs]:
            if isinstance(arg.annotation, ast.Name) and arg.annotation.id in TYPES:
                scope[arg.arg] = (TYPES[arg.annotation.id], (arg.annotation.id, ()))
        self.scopes.append(scope)
        self.generic_visit(node)
        self.scopes.pop()

    def visit_AnnAssign(self, node):
        self.visit(node.value) if node.value else None
        self._bind(node.target, node.value, node.annotation)

    def visit_Assign(self, node):
        self.visit(node.value)
        for target in node.targets:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for t, v in zip(target.elts, node.value.elts):
                    self._bind(t, v)
            else:
                self._bind(target, node.value)
            self.visit(target)

    def visit_Attribute(self, node):
        self._type_of(node)
        # the chain's inner parts were read by _type_of; an untyped base is walked on
        if self._type_of(node.value) is None:
            self.generic_visit(node)


def _scan(path, kind=None) -> _Reads:
    reader = _Reads(kind)
    reader.visit(ast.parse(path.read_text()))
    return reader


# Where a nested type is read on its own (a helper given spec.data), the
# kinds that carry it, and where: the planner must write the field in one.
CARRIERS = {"DataSpec": [("generate", ("data",)), ("caption", ("data",)), ("pack", ("data",)),
                         ("evaluate", ("data",))],
            "ModelSpec": [("train", ("model",))], "TrainSection": [("train", ("recipe",))],
            "RuleSpec": [("curate", ("rule",))], "PackCaptionsSpec": [("pack", ("captions",))],
            "PromptOptionsSpec": [("generate", ("prompt_options",))],
            "Word2SenSpec": [("generate", ("prompt_options", "word2sen"))]}


def _all_reads():
    """Every spec read in synscale/ as (kind, wire key path), or for a nested
    type read on its own ("DataSpec", key path); and the reads of no field."""
    root_kind = {cls.__name__: kind for kind, cls in specs.SPECS.items()}
    reads, unknown = set(), []
    for path in sorted((ROOT / "synscale").rglob("*.py")):
        kind = path.stem if path.parent.name == "stages" and path.stem in KINDS else None
        r = _scan(path, kind)
        unknown += [f"{path.relative_to(ROOT)}: {u}" for u in r.unknown]
        reads |= {(root_kind.get(root, root), keys) for root, keys in r.reads}
    return reads, unknown


def _paths(spec: dict, prefix: tuple = ()) -> set[tuple]:
    out = set()
    for k, v in spec.items():
        out.add((*prefix, k))
        if isinstance(v, dict):
            out |= _paths(v, (*prefix, k))
    return out


def _variant(tmp_path):
    """imagen_sweep with what the shipped studies leave off: captioning the
    real images (no captions file), shards released after packing, both
    generation scores, dated metadata with snapshot curation, undecodable
    images skipped and a masked evaluation set of one's own."""
    text = (ROOT / "studies/imagen_sweep.toml").read_text()
    text = text.replace('captions = "/datasets/imagenet/captions_blip2.json"\n', "")
    text = text.replace('precision = "fp16"\n', 'precision = "fp16"\nkeep_shards = false\n'
                        'scores = ["recognizability", "clip"]\n'
                        'score_classifier = "timm/vit_base_patch16_224"\n'
                        'score_clip_model = "openai/clip-vit-base-patch32"\n', 1)
    text = text.replace('classes = "imagenet-1k"\n', 'classes = "imagenet-1k"\n'
                        'metadata = "/datasets/imagenet/years.csv"\n', 1)
    # undecodable images skipped, and an evaluation set of one's own with a mask
    text = text.replace('classes = "imagenet-1k"\n', 'classes = "imagenet-1k"\n'
                        'bad_images = "skip"\n', 1)
    text = text.replace('"imagenet-v2"]\n', '"imagenet-v2", "lab-photos"]\n', 1)
    mask = tmp_path / "lab_classes.txt"
    mask.write_text("n01440764\nn01443537\n")
    text = text.replace('[evaluate.dirs]\n', '[evaluate.dirs]\nlab-photos = "/datasets/lab"\n', 1)
    text += f'\n[evaluate.masks]\nlab-photos = "{mask}"\n'
    text += "\n[curate]\nsnapshots = [2014]\n"
    path = tmp_path / "variant.toml"
    path.write_text(text)
    return path


def _planned(tmp_path):
    for path in [*sorted((ROOT / "studies").glob("*.toml")), _variant(tmp_path)]:
        yield from expand(load_study(path)).stages


def test_every_planned_spec_reads_back_as_its_type(tmp_path):
    """Types: what the planner writes is what the runners' types say, and the
    wire dict is the spec's own (nothing lost or added on the way)."""
    kinds = set()
    for stage in _planned(tmp_path):
        typed = specs.read(stage.kind, stage.spec)
        assert specs.wire(typed) == stage.spec
        kinds.add(stage.kind)
    assert kinds == set(KINDS)  # the studies plan every kind


def test_every_spec_field_a_runner_reads_exists_and_is_planned(tmp_path):
    reads, unknown = _all_reads()
    assert unknown == []
    written: dict[str, set[tuple]] = defaultdict(set)
    for stage in _planned(tmp_path):
        written[stage.kind] |= _paths(stage.spec)
    def planned(root, keys):
        return any((*prefix, *keys) in written[kind]
                   for kind, prefix in CARRIERS.get(root, [(root, ())]))

    unplanned = {(root, keys) for root, keys in reads if not planned(root, keys)}
    assert unplanned <= set(NOT_PLANNED), sorted(unplanned - set(NOT_PLANNED))
    assert set(NOT_PLANNED) <= reads  # an allowance no runner needs any more goes too


def test_the_reader_sees_the_reads_that_matter():
    """The check is not empty: runners' ctx.spec, annotated helpers, aliases
    (recipe = spec.recipe), self.spec and nested specs are all followed."""
    reads, _ = _all_reads()
    assert {("train", ("seed",)), ("train", ("recipe", "batch_size")),
            ("ModelSpec", ("patch_size",)),       # models/vit.py, given spec.model
            ("TrainSection", ("label_smoothing",)),  # data/augment.py, given spec.recipe
            ("pack", ("data", "train_dir")), ("pack", ("release_inputs",)),
            ("pack", ("captions", "pairs")), ("generate", ("score_clip_model",)),  # self.spec
            ("generate", ("prompt_options", "captions")), ("RuleSpec", ("threshold",)),
            ("evaluate", ("zero_shot_templates",)), ("caption", ("max_new_tokens",))} <= reads


def test_a_misread_field_is_reported(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("def run(ctx):\n    spec = ctx.spec\n    recipe = spec.recipe\n"
                    "    return recipe.batch_sise, spec.model.widht, ctx.spec.seed\n")
    r = _scan(path, "train")
    assert r.unknown == ["TrainSection.batch_sise (line 4)", "ModelSpec.widht (line 4)"]
    assert ("TrainSpec", ("seed",)) in r.reads


@pytest.mark.parametrize("change, message", [
    ({"seeed": 1}, "train: TrainSpec has no field seeed; its fields: model, recipe"),
    ({"seed": "0"}, "train.seed: '0' is not int"),
    ({"seed": True}, "train.seed: True is not int"),
    ({"recipe.lr": 1}, "train.recipe.lr: 1 is not float"),
    ({"model.width": None}, None),  # an optional field may be absent
    ({"images_per_class": None}, "train: TrainSpec needs images_per_class, which is missing"),
])
def test_a_spec_the_runner_cannot_read_fails_naming_the_field(change, message):
    stage = next(s for s in expand(load_study(ROOT / "studies/digits_sweep.toml")).stages
                 if s.kind == "train")
    raw = {**stage.spec, "model": {**stage.spec["model"]}, "recipe": {**stage.spec["recipe"]}}
    for key, value in change.items():
        *outer, last = key.split(".")
        table = raw[outer[0]] if outer else raw
        if value is None:
            del table[last]
        else:
            table[last] = value
    if message is None:
        assert specs.read("train", raw).model.width is None
        return
    with pytest.raises(ValueError) as e:
        specs.read("train", raw)
    assert message in str(e.value)
