"""Curation settings as deltas against the unfiltered set, the layout of the
Pretrainer's Guide's tables: one row per setting, one column per eval set
(the change in loss and top-1), the share of data it kept, and the average
over the eval sets.

A filtered or dated set is compared with the same source, model and size
without curation (`curation` ""); a leave-one-out set with its whole pool
("all"). Blends have no single unfiltered counterpart and are left to the
scaling tables.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synscale.analysis.fit import _norm, _num, sort_key

# what a row is compared within: everything but the eval set and curation
CONTEXT = ("templates", "source", "generator", "prompts", "guidance", "synthetic_share", "arch",
           "width", "images_per_class")


def _baseline_label(curation: str) -> str | None:
    if curation.startswith("blend:") or curation in ("", "all"):
        return None
    return "all" if curation.startswith("without ") else ""


def curation_deltas(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (curation setting, context): per eval set the setting's
    loss and top-1 minus the baseline's, its kept share, and the means."""
    index = {}
    for r in rows:
        key = (tuple(_norm(r.get(a)) for a in CONTEXT), _norm(r.get("curation")) or "",
               _norm(r.get("eval_set")))
        index[key] = r
    settings: dict[tuple, dict] = {}
    for (context, curation, eval_set), r in index.items():
        base_label = _baseline_label(curation)
        if base_label is None:
            continue
        base = index.get((context, base_label, eval_set))
        if base is None:
            continue
        entry = settings.setdefault((curation, context), {
            "curation": curation, "baseline": base_label or "unfiltered",
            **{a: v for a, v in zip(CONTEXT, context)}, "kept_share": _num(r.get("kept_share")),
            "eval_sets": {}})
        entry["eval_sets"][eval_set] = {"delta_loss": _num(r["loss"]) - _num(base["loss"]),
                                        "delta_top1": _num(r["top1"]) - _num(base["top1"])}
    out = []
    for e in settings.values():
        deltas = list(e["eval_sets"].values())
        e["mean_delta_loss"] = sum(d["delta_loss"] for d in deltas) / len(deltas)
        e["mean_delta_top1"] = sum(d["delta_top1"] for d in deltas) / len(deltas)
        out.append(e)
    out.sort(key=lambda e: sort_key({a: e[a] for a in CONTEXT}) + (e["curation"],))
    return out
