"""[curate] as training sources: filtered, dated, blended and leave-one-out
sets, each built from packs that already exist, so no curation setting
re-renders or re-packs an image.

A training source reads packs, each optionally followed by the curate stage
that filters it (stages/curate.py), at shares that split every set and
micro batch (stages/train.py). Labels in the `curation` axis say what was
done: "" for the unfiltered sets, "recognizability>=0.5", "recognizability<0.5"
(the inverse filter), "unflagged", "year<=2014", "blend:<name>", and "all" or
"without <source>" for a leave-one-out pool.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from synscale.plan.graph import Stage
from synscale.study.specs import CurateSpec, RuleSpec


@dataclass(frozen=True)
class Source:
    needs: tuple          # stages the trainings need planned (packs, generation, curation)
    reads: tuple          # what a training reads, in order: packs, each curate after its pack
    axes: dict            # sweep coordinates
    sizes: tuple          # images per class
    adds: dict = field(default_factory=dict)  # what the training spec adds (shares)


def rule_label(rule: RuleSpec) -> str:
    """A rule's value of the `curation` axis."""
    if rule.kind == "quality":
        return f"{rule.score}{'<' if rule.inverse else '>='}{rule.threshold:g}"
    return "unflagged" if rule.kind == "safety" else f"year<={rule.year}"


def quality_rules(c) -> list[tuple[RuleSpec, str]]:
    """(rule, label) of every quality and safety filter the study asks for."""
    rules = []
    for t in c.thresholds:
        rule = RuleSpec("quality", score=c.score, threshold=float(t), inverse=False)
        rules += [rule, replace(rule, inverse=True)] if c.inverse else [rule]
    if c.safety:
        rules.append(RuleSpec("safety"))
    return [(rule, rule_label(rule)) for rule in rules]


def select(selector: str, configs: list[dict]) -> int:
    """The one generation config a selector ('guidance=1.0', 'generator=imagen,
    prompts=word2sen') names; ValueError naming what would match otherwise."""
    wanted = {}
    for part in selector.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("generator", "prompts", "guidance"):
            raise ValueError(f"{selector!r}: expected 'real' or key=value pairs of generator, "
                             "prompts, guidance (comma-separated)")
        wanted[key.strip()] = value.strip()
    found = [i for i, c in enumerate(configs) if all(_same(c[k], v) for k, v in wanted.items())]
    if len(found) != 1:
        shown = "; ".join(",".join(f"{k}={v}" for k, v in c.items()) for c in configs)
        raise ValueError(f"{selector!r} matches {len(found)} generation configs; it must name "
                         f"one of: {shown}")
    return found[0]


def _same(have, text: str) -> bool:
    try:
        return float(have) == float(text)
    except (TypeError, ValueError):
        return str(have) == text


def curated(s, plain: list[Source], real_pack: Stage | None,
            synthetic: list[tuple[Stage, list, dict]], stage: Callable) -> list[Source]:
    """The curated sources [curate] adds beside the plain ones."""
    c, out = s.curate, []
    for rule, label in quality_rules(c):
        for src in plain:
            if src.axes["source"] not in c.applies_to:
                continue
            reads, needs = [], list(src.needs)
            for st in src.reads:  # filter the generated packs, never the real one
                reads.append(st)
                if st.spec.get("source") == "synthetic":
                    cur = stage("curate", CurateSpec(rule, st.spec.get("per_class")), (st,))
                    reads.append(cur)
                    needs.append(cur)
            out.append(replace(src, needs=tuple(needs), reads=tuple(reads),
                               axes={**src.axes, "curation": label}))
    for year in c.snapshots:
        for src in plain:
            if src.axes["source"] != "real":
                continue
            rule = RuleSpec("snapshot", year=int(year))
            cur = stage("curate", CurateSpec(rule, real_pack.spec.get("per_class")), (real_pack,))
            out.append(replace(src, needs=(*src.needs, cur), reads=(real_pack, cur),
                               axes={**src.axes, "curation": rule_label(rule)}))
    configs = [axes for _, _, axes in synthetic]
    no_gen = {"generator": "", "prompts": "", "guidance": "", "synthetic_share": ""}
    sizes = s.sweep.mixture_images_per_class
    for name, parts in c.blends.items():
        picked = [synthetic[select(sel, configs)] for sel in parts]
        out.append(Source(tuple(x for pack, gens, _ in picked for x in (*gens, pack)),
                          tuple(pack for pack, _, _ in picked),
                          {"source": "blend", **no_gen, "curation": f"blend:{name}"}, sizes,
                          {"shares": tuple(float(v) for v in parts.values())}))
    if c.leave_one_out:
        pool = [(sel, (real_pack, []) if sel == "real" else synthetic[select(sel, configs)][:2])
                for sel in c.leave_one_out]
        for left_out in (None, *c.leave_one_out):
            kept = [(pack, gens) for sel, (pack, gens) in pool if sel != left_out]
            out.append(Source(tuple(x for pack, gens in kept for x in (*gens, pack)),
                              tuple(pack for pack, _ in kept),
                              {"source": "pool", **no_gen,
                               "curation": "all" if left_out is None else f"without {left_out}"},
                              sizes, {"shares": (1 / len(kept),) * len(kept)}))
    return out
