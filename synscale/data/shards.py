"""Generated images on disk: shards of encoded images with their metadata.

A shard is one sampler batch of one class, an uncompressed .npz holding
- `encoded` (the images' encoded bytes, end to end) and `offsets` (where
  each starts, one more than images), so one image decodes without the rest;
- `encoding`, `image_shape`, `image_dtype`: how to get the array back;
- the per-image metadata the generate stage records (labels, indices, seeds,
  prompts, ...), which readers may take without touching an image.

Encodings: pixel images (uint8 HWC, what the diffusers generators give) as
PNG, JPEG or WebP through Pillow; the embedded DDPM's samples are float32
values that PNG cannot hold, so "png" stores them as DEFLATE-compressed
float32 (PNG's own compression), lossless and bit-identical. Encoders are
deterministic for a given library version (`codec_versions` goes into the
generate manifest), so a re-rendered shard has the same bytes.

At ImageNet scale this is what keeps scratch and memory bounded: JPEG 95 of
a 256 px image is ~25-40 kB against 196 kB raw, and a reader holds one
shard's encoded bytes (batch_size images) and decodes one image at a time.
"""
from __future__ import annotations

import io
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from synscale.plan import state

FORMATS = ("png", "jpeg", "webp")
LOSSY = ("jpeg", "webp")
FLOAT_ENCODING = "deflate-float32"


def encoding_for(image_format: str, dtype) -> str:
    """The encoding a format gives images of this dtype (float arrays: lossless only)."""
    if np.dtype(dtype) == np.uint8:
        return image_format
    if image_format != "png":
        raise ValueError(f"image_format {image_format!r} is lossy; float samples (the embedded "
                         f"DDPM's) can only be stored losslessly: image_format = \"png\"")
    return FLOAT_ENCODING


def encode(image: np.ndarray, encoding: str, quality: int) -> bytes:
    if encoding == FLOAT_ENCODING:
        return zlib.compress(np.ascontiguousarray(image, dtype=np.float32).tobytes(), 9)
    from PIL import Image

    out = io.BytesIO()
    im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if encoding == "png":
        im.save(out, format="PNG", optimize=False, compress_level=6)
    elif encoding == "jpeg":
        # 4:4:4 at 95 and above (as libjpeg's own tools do): no chroma loss to a
        # resize the pack makes anyway
        im.save(out, format="JPEG", quality=quality, subsampling=0 if quality >= 95 else 2)
    else:
        im.save(out, format="WEBP", quality=quality, method=4)
    return out.getvalue()


def decode(data: bytes, encoding: str, shape, dtype) -> np.ndarray:
    if encoding == FLOAT_ENCODING:
        return np.frombuffer(zlib.decompress(data), dtype=np.float32).reshape(shape)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        array = np.asarray(im.convert("RGB" if shape[-1] == 3 else "L"))
    return array.reshape(shape).astype(dtype, copy=False)


def codec_versions() -> dict[str, str]:
    """What a shard's bytes depend on besides the pixels."""
    import PIL
    from PIL import features
    return {"pillow": PIL.__version__, "libjpeg": str(features.version("jpg")),
            "libwebp": str(features.version("webp")), "zlib": zlib.ZLIB_RUNTIME_VERSION}


def write(path: Path, images: np.ndarray, meta: dict, image_format: str, quality: int) -> int:
    """Encode `images` (N, ...) into one shard at `path`, atomically; its size in bytes."""
    encoding = encoding_for(image_format, images.dtype)
    blobs = [encode(im, encoding, quality) for im in images]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    with state.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, encoded=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
                     encoding=np.array(encoding), image_shape=np.array(images.shape[1:]),
                     image_dtype=np.array(images.dtype.str), **meta)
    return path.stat().st_size


class Shard:
    """One shard, read lazily: metadata arrays by name, images one by one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with np.load(self.path) as z:
            self.files = [f for f in z.files if f not in ("encoded", "offsets")]
            self.encoding = str(z["encoding"])
            self.shape = tuple(int(x) for x in z["image_shape"])
            self.dtype = np.dtype(str(z["image_dtype"]))
            self.offsets = z["offsets"]
        self._encoded = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def meta(self, key: str) -> np.ndarray:
        with np.load(self.path) as z:
            return z[key]

    def image(self, i: int) -> np.ndarray:
        if self._encoded is None:
            with np.load(self.path) as z:
                self._encoded = z["encoded"]
        return decode(self._encoded[self.offsets[i]:self.offsets[i + 1]].tobytes(),
                      self.encoding, self.shape, self.dtype)

    def images(self) -> np.ndarray:
        return np.stack([self.image(i) for i in range(len(self))])


def paths(folder: Path) -> list[Path]:
    """A finished generate stage's shards, in (class, index) order."""
    manifest = state.read_json(Path(folder) / "manifest.json")
    return [Path(folder) / name for name in manifest["shards"]]


def meta_of(folders, key: str) -> np.ndarray:
    """One metadata array over every shard of these generate stages, in their order."""
    return np.concatenate([Shard(p).meta(key) for f in folders for p in paths(f)])


class Rows:
    """Every image of some generate stages as rows sorted by (class, index),
    decoded on demand. Holds per-row locations (a few bytes per image) and,
    per process, the encoded bytes of the one shard last read: a reader that
    walks rows in order (FFCV's writer workers take consecutive chunks) reads
    each shard about once, with memory independent of the row count."""

    def __init__(self, folders):
        self.files = [p for f in folders for p in paths(f)]
        labels, where = [], []
        for k, p in enumerate(self.files):
            with np.load(p) as z:
                n = len(z["offsets"]) - 1
                labels.append(z["labels"])
            where.append(np.stack([np.full(n, k), np.arange(n)], axis=1))
        labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        self.labels = labels[order]
        self.where = (np.concatenate(where) if where else np.zeros((0, 2), int))[order]
        self.order = order  # row -> position in shard order (to align metadata)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, row: int) -> np.ndarray:
        k, i = self.where[row]
        return _shard(str(self.files[k])).image(int(i))

    def meta(self, key: str) -> np.ndarray:
        """A metadata array aligned with the rows."""
        return np.concatenate([Shard(p).meta(key) for p in self.files])[self.order]


@lru_cache(maxsize=1)
def _shard(path: str) -> Shard:
    return Shard(Path(path))
