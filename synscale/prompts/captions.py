"""IN-Captions: the class name followed by a caption of a real training image
of that class ("c, caption").

Captions come from a file a captioning model wrote (BLIP-2-class, over the
real training set): JSON, an object mapping a class (wnid, CLIP name or
index) to its list of captions; or TSV/CSV with the columns `class` and
`caption`.
"""
from __future__ import annotations

import json
from pathlib import Path

from synscale.prompts.classes import ClassInfo
from synscale.prompts.strategies import classname


def read(path: Path) -> dict[str, list[str]]:
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError(f"{path}: expected an object mapping each class to a list of captions")
        return {str(k): [str(c) for c in v] for k, v in data.items()}
    if path.suffix in (".tsv", ".csv"):
        from synscale.data.tables import grouped
        return grouped(path, "class", "caption")
    raise ValueError(f"{path}: captions file must end in .json, .tsv or .csv")


def pools(classes: list[ClassInfo], path: Path) -> dict[int, list[str]]:
    captions = read(path)
    out, missing = {}, []
    for c in classes:
        found = next((captions[k] for k in (c.wnid, c.clip_name, str(c.index), *c.names)
                      if k and captions.get(k)), None)
        if not found:
            missing.append(c.clip_name)
            continue
        # a captioner may say nothing about an image: the class name alone then
        out[c.index] = [f"{classname(c)}, {caption.rstrip('.')}" if caption.strip() else
                        classname(c) for caption in found]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{path}: no captions for {shown} (keys tried: wnid, CLIP name, "
                         "class index, WordNet names)")
    return out
