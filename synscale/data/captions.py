"""Real image-caption pairs for CLIP training on an image folder.

A pairs file is TSV or CSV with the columns `image` (a path relative to the
training folder, such as `n01440764/a.jpg`) and `caption`, or JSON: an object
mapping such a path to a caption or a list of captions. An image may have
several captions (COCO has five); training then draws one per epoch.
"""
from __future__ import annotations

import json
from pathlib import Path

from synscale.data.tables import grouped


def read(path: str | Path) -> dict[str, list[str]]:
    """Relative image path -> its captions."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object mapping image paths to captions")
        return {str(k): [str(c) for c in (v if isinstance(v, list) else [v])]
                for k, v in data.items()}
    if path.suffix in (".tsv", ".csv"):
        return grouped(path, "image", "caption")
    raise ValueError(f"{path}: pairs file must end in .tsv, .csv or .json")


def read_pairs(path: str | Path, train_dir: str | Path, files) -> list[list[str]]:
    """The captions of each packed file, in the files' order; every file needs one."""
    captions = read(path)
    root = Path(train_dir)
    keys = [Path(f).relative_to(root).as_posix() for f in files]
    missing = [k for k in keys if not captions.get(k)]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of the {len(keys)} packed training images "
                         f"have no caption (first: {missing[0]}); every one needs a row "
                         "whose image is its path relative to data.train_dir")
    return [captions[k] for k in keys]
