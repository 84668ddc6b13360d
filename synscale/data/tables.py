"""Small TSV/CSV files a study points at (captions, image-caption pairs,
timestamps): one reader, so each says the same thing about a bad file."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def grouped(path: str | Path, key: str, value: str) -> dict[str, list[str]]:
    """`key` column -> every `value` on its rows, both stripped; the file's
    suffix picks the delimiter (.tsv: tab, .csv: comma)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        if not {key, value} <= set(rows.fieldnames or ()):
            raise ValueError(f"{path}: needs the columns '{key}' and '{value}'; has "
                             f"{rows.fieldnames}")
        out = defaultdict(list)
        for row in rows:
            out[(row[key] or "").strip()].append((row[value] or "").strip())
    return dict(out)
