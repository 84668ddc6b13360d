"""The paper's prompt strategies (Fan et al., CVPR 2024), as pools of prompts
per class.

A strategy turns a class into a pool of candidate prompts; the prompt of
image i of class c is drawn from the pool by a hash of (seed, c, i), so it
does not depend on how images are sharded, and every smaller data size sees
the same prompts as the next larger one. Word2Sen and IN-Captions need a
language model or captions: their pools come from word2sen.py and
captions.py; the rest are built here from the class metadata (classes.py).

    classnames                      c                  Tench, Tinca tinca
    classnames+description          c, d               Tench, Tinca tinca, freshwater dace-like ...
    classnames+hypernyms            c, h               Tench, Tinca tinca, cyprinid, cyprinid fish
    classnames+hypernyms+places     c, h inside p      ... cyprinid fish inside bamboo forest
    classnames+description+places   c, d inside p
    clip-templates-7 / -80          template(CLIP name) a photo of the large tench
    word2sen                        a sentence a seq2seq model writes around the CLIP name
    in-captions                     c, caption of a real training image of the class

c: the class's WordNet lemmas, the first capitalized; d: WordNet's gloss,
without its example sentences; h: the lemmas of the direct hypernym; p: a
Places365 scene.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache

from synscale.prompts.classes import DATA, ClassInfo

WORDNET = ("classnames+description", "classnames+hypernyms", "classnames+hypernyms+places",
           "classnames+description+places")


def capitalized(text: str) -> str:
    """First letter up, unless the word is already cased (iPod, CD player)."""
    if len(text) > 1 and text[0].islower() and not text[1].isupper():
        return text[0].upper() + text[1:]
    return text


def classname(c: ClassInfo) -> str:
    return capitalized(", ".join(c.names))


def description(c: ClassInfo) -> str:
    # WordNet glosses append usage examples after '; "': not a description.
    return c.gloss.split('; "')[0].strip()


def hypernym(c: ClassInfo) -> str:
    return ", ".join(c.hypernyms[0]) if c.hypernyms else ""


@cache
def places() -> tuple[str, ...]:
    """Places365 scenes as phrases: /a/apartment_building/outdoor -> outdoor
    apartment building, /s/stadium/football -> football stadium."""
    out = []
    for line in (DATA / "places365_categories.txt").read_text().splitlines():
        parts = [p.replace("_", " ") for p in line.strip("/").split("/")[1:]]
        out.append(" ".join(reversed(parts)))
    return tuple(out)


@cache
def templates(count: int) -> tuple[str, ...]:
    lines = (DATA / f"clip_templates_{count}.txt").read_text().splitlines()
    return tuple(t.strip() for t in lines if t.strip())


def _from_template(template: str, name: str) -> str:
    return template.format(name).rstrip(".")


POOLS: dict[str, Callable[[ClassInfo], list[str]]] = {
    "classnames": lambda c: [classname(c)],
    "classnames+description": lambda c: [f"{classname(c)}, {description(c)}"],
    "classnames+hypernyms": lambda c: [f"{classname(c)}, {hypernym(c)}"],
    "classnames+hypernyms+places": lambda c: [f"{classname(c)}, {hypernym(c)} inside {p}"
                                              for p in places()],
    "classnames+description+places": lambda c: [f"{classname(c)}, {description(c)} inside {p}"
                                                for p in places()],
    "clip-templates-7": lambda c: [_from_template(t, c.clip_name) for t in templates(7)],
    "clip-templates-80": lambda c: [_from_template(t, c.clip_name) for t in templates(80)],
}


def template_pool(strategy: str, c: ClassInfo) -> list[str]:
    if strategy in WORDNET and not c.has_wordnet:
        raise ValueError(f"prompt strategy {strategy!r} needs WordNet metadata (a gloss and "
                         f"hypernyms), which class {c.name!r} has not; classes with names only "
                         f"take: classnames, clip-templates-7, clip-templates-80, word2sen, "
                         "in-captions")
    return POOLS[strategy](c)


def pick(pool: list[str], seed: int, class_index: int, image_index: int) -> str:
    """The prompt of one image: a function of (seed, class, index) only."""
    if len(pool) == 1:
        return pool[0]
    digest = hashlib.sha256(f"prompt:{seed}:{class_index}:{image_index}".encode()).digest()
    return pool[int.from_bytes(digest[:8], "little") % len(pool)]
