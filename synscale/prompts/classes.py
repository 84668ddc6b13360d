"""Class lists with what prompts need: names, CLIP names, WordNet glosses and
hypernym chains.

ImageNet-1k's metadata ships in data/imagenet1k.json (built from WordNet 3.0
by tools/build_class_metadata.py). Other class lists have names only: the
digits, or a text file with one class per line, either a name or an
ImageNet-1k wnid (which brings its WordNet metadata along).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: prompts/ runs without the study package loaded
    from synscale.study.specs import DataSpec

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class ClassInfo:
    index: int
    names: tuple            # WordNet lemmas, the first the common name; or (name,)
    clip_name: str          # CLIP's cleaned-up name, for templates
    wnid: str = ""
    gloss: str = ""         # WordNet's description
    hypernyms: tuple = ()   # lemmas of each ancestor, the direct parent first

    @property
    def name(self) -> str:
        return self.clip_name

    @property
    def has_wordnet(self) -> bool:
        return bool(self.wnid)


@cache
def imagenet1k() -> tuple[ClassInfo, ...]:
    rows = json.loads((DATA / "imagenet1k.json").read_text(encoding="utf-8"))
    return tuple(ClassInfo(r["index"], tuple(r["names"]), r["clip_name"], r["wnid"], r["gloss"],
                           tuple(tuple(h) for h in r["hypernyms"])) for r in rows)


def digits() -> tuple[ClassInfo, ...]:
    from synscale.data.digits import CLASS_NAMES
    return tuple(ClassInfo(i, (f"digit {n}",), f"digit {n}") for i, n in enumerate(CLASS_NAMES))


def from_file(path: Path) -> tuple[ClassInfo, ...]:
    """One class per line: an ImageNet-1k wnid or a plain name."""
    by_wnid = {c.wnid: c for c in imagenet1k()}
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry:
            continue
        known = by_wnid.get(entry)
        if known:
            out.append(ClassInfo(len(out), known.names, known.clip_name, known.wnid,
                                 known.gloss, known.hypernyms))
        else:
            out.append(ClassInfo(len(out), (entry,), entry))
    return tuple(out)


LISTS = {"imagenet-1k": imagenet1k, "digits": digits}


def class_list(name: str) -> tuple[ClassInfo, ...]:
    """A named list (imagenet-1k, digits) or a path to a class file."""
    if name in LISTS:
        return LISTS[name]()
    path = Path(name)
    if path.is_file():
        return from_file(path)
    raise ValueError(f"class list {name!r}: neither a known list ({', '.join(LISTS)}) "
                     "nor a file with one wnid or name per line")


def of_data(data: DataSpec) -> tuple[ClassInfo, ...]:
    """The classes a run's data spec names: the digits, or an image folder's
    class list (ImageNet-1k when it names none)."""
    if data.dataset == "digits":
        return digits()
    return class_list(data.classes or "imagenet-1k")


def find(classes: tuple[ClassInfo, ...], query: str) -> ClassInfo:
    """A class by CLIP name, any WordNet lemma or wnid (case-insensitive)."""
    q = query.strip().lower()
    for c in classes:
        if q in (c.clip_name.lower(), c.wnid.lower(), *(n.lower() for n in c.names)):
            return c
    import difflib
    names = [c.clip_name for c in classes]
    hint = difflib.get_close_matches(query, names, n=3)
    raise ValueError(f"no class named {query!r}" +
                     (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))


def output_names(data: DataSpec) -> list[str]:
    """The names of a model's outputs, in order (the wnid where the list has
    one): what a pack records for the models trained on it (models/portable.py)."""
    return [c.wnid or c.clip_name for c in of_data(data)]
