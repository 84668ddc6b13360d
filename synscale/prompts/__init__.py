"""Prompts for text-to-image generation: the paper's strategies over a class list.

    pools = build_pools("classnames+hypernyms", classes, PromptOptions(), seed=0)
    prompt = pick(pools[c.index], seed, c.index, image_index)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from synscale.prompts.classes import ClassInfo
from synscale.prompts.strategies import POOLS, pick, template_pool
from synscale.prompts.word2sen import Word2Sen

STRATEGIES = (*POOLS, "word2sen", "in-captions")


@dataclass(frozen=True)
class PromptOptions:
    word2sen: Word2Sen = field(default_factory=Word2Sen)
    captions: str = ""   # IN-Captions: the captions file


@dataclass
class Pools:
    prompts: dict[int, list[str]]   # class index -> candidate prompts
    notes: dict = field(default_factory=dict)  # what the manifest should say about them


def build_pools(strategy: str, classes: list[ClassInfo], options: PromptOptions,
                seed: int) -> Pools:
    if strategy in POOLS:
        return Pools({c.index: template_pool(strategy, c) for c in classes})
    if strategy == "word2sen":
        prompts, fixed = options.word2sen.pools(classes, seed)
        return Pools(prompts, {"word2sen_model": options.word2sen.model,
                               "sentences_given_the_name": fixed})
    if strategy == "in-captions":
        if not options.captions:
            raise ValueError("prompt strategy 'in-captions' needs a captions file "
                             "([prompts] captions = \"...\")")
        from synscale.prompts import captions
        return Pools(captions.pools(classes, options.captions), {"captions": options.captions})
    raise ValueError(f"unknown prompt strategy {strategy!r}; available: {', '.join(STRATEGIES)}")


__all__ = ["STRATEGIES", "PromptOptions", "Pools", "build_pools", "pick", "ClassInfo"]
