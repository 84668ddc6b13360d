"""Image folders: one folder per class, named by the class's wnid (or by its
name, for class lists without wnids), images taken in file-name order."""
from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# evaluation resizes the short side to size / 0.875, then center-crops (256 -> 224);
# packs keep the longest side at most resolution / 0.875 for the same reason
CROP_FRACTION = 0.875


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def class_key(c) -> str:
    """The class's folder name in an image folder: its wnid, or its name."""
    return c.wnid or c.clip_name


def images_of(train_dir: str, key: str, n: int, leave_out=frozenset(),
              at_most: bool = False) -> list[Path]:
    """The first `n` images of class folder `key`, in file-name order, less
    `leave_out` (files found undecodable, with [data] bad_images = "skip");
    fewer is an error unless `at_most` (a sample grid shows what there is)."""
    folder = Path(train_dir) / key
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no folder for class {key!r} in data.train_dir")
    files = sorted(p for p in folder.iterdir() if is_image(p))
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    kept = [p for p in files if str(p) not in leave_out] if leave_out else files
    if len(kept) < n and not at_most:
        gone = f" ({len(files) - len(kept)} left out as undecodable)" if leave_out else ""
        raise ValueError(f"{folder}: {len(kept)} images{gone}; the study reads the first {n} "
                         "of each class")
    return kept[:n]
