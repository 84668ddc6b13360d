"""The contract between the planner and the runners: every key a runner
reads off its stage's spec (spec["k"], spec.get("k"), nested ones such as
spec["data"]["train_dir"], and through a local name bound to a part of the
spec, such as recipe = spec["recipe"]) is one study/expand.py writes for
that kind, in the shipped studies or a variant of them that turns on what
they leave off (caption stages, released shards, scores, dated metadata).
A renamed key fails here, not when a job runs on the cluster. Found by
reading the runners' source (ast), so a key read on a rare path counts too.
(Typed per-kind specs are to replace this check: issue 15.)"""
import ast
from collections import defaultdict

from conftest import ROOT
from synscale.plan.graph import KINDS
from synscale.study.expand import expand
from synscale.study.load import load_study

# Keys a runner reads that the planner never writes, with why that is right.
NOT_PLANNED = {
    ("pack", ("workers",)): "tools/bench_pack.py sets the writer's processes; a planned pack "
                            "uses the CPUs its job was given",
}


def _reads(path) -> set[tuple]:
    """Key paths read off `spec` (or `<x>.spec`) in a module, by function."""
    tree = ast.parse(path.read_text())
    out: set[tuple] = set()

    def base(node, aliases):
        if isinstance(node, ast.Name):
            return () if node.id == "spec" else aliases.get(node.id)
        if isinstance(node, ast.Attribute) and node.attr == "spec":
            return ()
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            b = base(node.value, aliases)
            return None if b is None else (*b, node.slice.value)
        return None

    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        aliases: dict[str, tuple] = {}
        for n in ast.walk(fn):  # recipe = spec["recipe"]; spec, recipe = ctx.spec, ctx.spec[...]
            if isinstance(n, ast.Assign) and len(n.targets) == 1:
                t = n.targets[0]
                pairs = [(t, n.value)] if isinstance(t, ast.Name) else \
                    list(zip(t.elts, n.value.elts)) if isinstance(t, ast.Tuple) and \
                    isinstance(n.value, ast.Tuple) else []
                for name, value in pairs:
                    if isinstance(name, ast.Name) and name.id != "spec":
                        b = base(value, aliases)
                        if b:
                            aliases[name.id] = b
        for n in ast.walk(fn):
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) \
                    and isinstance(n.slice.value, str):
                b = base(n.value, aliases)
                if b is not None:
                    out.add((*b, n.slice.value))
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) \
                    and n.func.attr == "get" and n.args and isinstance(n.args[0], ast.Constant):
                b = base(n.func.value, aliases)
                if b is not None:
                    out.add((*b, n.args[0].value))
    return out


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
    generation scores, and dated metadata for snapshot curation."""
    text = (ROOT / "studies/imagen_sweep.toml").read_text()
    text = text.replace('captions = "/datasets/imagenet/captions_blip2.json"\n', "")
    text = text.replace('precision = "fp16"\n', 'precision = "fp16"\nkeep_shards = false\n'
                        'scores = ["recognizability", "clip"]\n'
                        'score_classifier = "timm/vit_base_patch16_224"\n'
                        'score_clip_model = "openai/clip-vit-base-patch32"\n', 1)
    text = text.replace('classes = "imagenet-1k"\n', 'classes = "imagenet-1k"\n'
                        'metadata = "/datasets/imagenet/years.csv"\n', 1)
    path = tmp_path / "variant.toml"
    path.write_text(text)
    return path


def _written(tmp_path) -> dict[str, set[tuple]]:
    out: dict[str, set[tuple]] = defaultdict(set)
    for path in [*sorted((ROOT / "studies").glob("*.toml")), _variant(tmp_path)]:
        for s in expand(load_study(path)).stages:
            out[s.kind] |= _paths(s.spec)
    return out


def test_every_spec_key_a_runner_reads_is_planned(tmp_path):
    written = _written(tmp_path)
    assert set(written) == set(KINDS)  # the studies plan every kind
    unplanned = {(kind, key) for kind in KINDS
                 for key in _reads(ROOT / "synscale/stages" / f"{kind}.py") - written[kind]}
    assert unplanned <= set(NOT_PLANNED), sorted(unplanned - set(NOT_PLANNED))
    # an allowance no runner needs any more goes too
    assert all(key in _reads(ROOT / "synscale/stages" / f"{kind}.py")
               for kind, key in NOT_PLANNED)


def test_the_reader_sees_the_reads_that_matter(tmp_path):
    """The check is not empty: nested keys, .get and aliases are found, and a
    renamed key would be reported."""
    train = _reads(ROOT / "synscale/stages/train.py")
    assert {("seed",), ("model",), ("recipe",), ("recipe", "batch_size"),
            ("images_per_class",)} <= train
    pack = _reads(ROOT / "synscale/stages/pack.py")
    assert {("data", "train_dir"), ("release_inputs",), ("captions",)} <= pack
    assert ("recipe", "batch_sise") not in _written(tmp_path)["train"]
