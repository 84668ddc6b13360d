"""When each real training image was made, for data-age snapshots.

A metadata file is TSV or CSV with the columns `image` (a path relative to
the training folder) and `timestamp` (a year such as 2014, or an ISO date or
time such as 2014-06-30 or 2014-06-30T12:00:00; only the year is kept).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from synscale.data.tables import grouped

_YEAR = re.compile(r"^\s*(\d{4})(?:\b|-|$)")


def read_years(path: str | Path) -> dict[str, int]:
    path = Path(path)
    if path.suffix not in (".tsv", ".csv"):
        raise ValueError(f"{path}: metadata file must end in .tsv or .csv")
    out, bad = {}, []
    for image, stamps in grouped(path, "image", "timestamp").items():
        for stamp in stamps:
            m = _YEAR.match(stamp)
            if m is None:
                bad.append(f"{image}: {stamp!r}")
            else:
                out[image] = int(m.group(1))
    if bad:
        raise ValueError(f"{path}: timestamps must start with a year (2014, 2014-06-30, "
                         f"2014-06-30T12:00:00); {len(bad)} do not: {', '.join(bad[:3])}")
    return out


def years_of(path: str | Path, train_dir: str | Path, files) -> np.ndarray:
    """The year of each packed file, in the files' order; every file needs one."""
    years = read_years(path)
    keys = [Path(f).relative_to(Path(train_dir)).as_posix() for f in files]
    missing = [k for k in keys if k not in years]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of the {len(keys)} packed training images "
                         f"have no timestamp (first: {missing[0]})")
    return np.array([years[k] for k in keys], dtype=float)
