"""Decoding a user's image file into RGB, with care: what real folders hold.

ImageNet's own training set has CMYK JPEGs and a PNG named .JPEG; other
folders hold palette PNGs with transparency, 16-bit grayscale, grayscale
with alpha, and phone photos whose EXIF says how to turn them. All of these
decode to what a viewer shows (the format is read from the bytes, never the
name). A file that does not decode at all (not an image, truncated, empty)
raises `BadImage`, naming the file: a stage fails on it or, with
`[data] bad_images = "skip"`, leaves it out (stages/pack.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# A record line of each bad file a pack meets (its writer's workers append).
BAD_LOG = "bad_images.jsonl"
SHOWN = 20  # bad files an error message names; the rest are counted


class BadImage(ValueError):
    """A file that does not decode as an image."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: not a readable image ({why})")
        self.path, self.why = str(path), why


class BadImages(ValueError):
    """Undecodable files a stage met: `found` is [(path, why)], in name order."""

    def __init__(self, found: list[tuple[str, str]], what: str):
        found = sorted(found)
        shown = "; ".join(f"{p} ({w})" for p, w in found[:SHOWN])
        more = f", and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        super().__init__(f"{len(found)} undecodable image(s) in {what}: {shown}{more}. Remove "
                         "or replace them, or set [data] bad_images = \"skip\" to leave them "
                         "out (python -m synscale.check STUDY --decode lists them all)")
        self.found = found


def rgb(path: Path) -> np.ndarray:
    """The image in `path` as a uint8 HxWx3 array, as a viewer shows it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes now: a truncated file fails here, not in a worker later
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as e:
        raise BadImage(path, f"{e.__class__.__name__}: {e}") from None


def _to_rgb(im) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16- and 32-bit grayscale: PIL's convert clips to 0-255; scale instead
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        top = 1.0 if a.max() <= 1.0 else 255.0
        g = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # transparent pixels over white, as a browser shows them (not black)
        from PIL import Image
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))  # L, P, CMYK (inverted Adobe ones too), YCbCr, 1
