"""Generated images on disk: shards of encoded images with their metadata.

A shard is up to `[generate] shard_images` consecutive images of one class
(several sampler batches), an uncompressed .npz holding
- `encoded` (the images' encoded bytes, end to end) and `offsets` (where
  each starts, one more than images), so one image is read and decoded
  without the rest: a reader seeks to its bytes inside the file;
- `encoding`, `image_shape`, `image_dtype`: how to get the array back;
- the per-image metadata the generate stage records (labels, indices, seeds,
  prompts, ...), which readers may take without touching an image.

Encodings: pixel images (uint8 HWC, what the diffusers generators give) as
PNG, JPEG or WebP through Pillow; the embedded DDPM's samples are float32
values that PNG cannot hold, so "png" stores them as DEFLATE-compressed
float32 (PNG's own compression), lossless and bit-identical. Encoders are
deterministic for a given library version (`codec_versions` goes into the
generate manifest), so a re-rendered shard has the same bytes.

At ImageNet scale this is what keeps scratch, files and memory bounded: JPEG
95 of a 256 px image is ~25-40 kB against 196 kB raw, a shard of 1,000 of
them is one file of ~35 MB, and a reader holds one image's bytes at a time.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from synscale.plan import state
from synscale.plan.layout import shard_range

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
    return _save(path, np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets, encoding,
                 images.shape[1:], images.dtype, meta)


def _save(path: Path, encoded, offsets, encoding: str, shape, dtype, meta: dict) -> int:
    with state.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, encoded=encoded, offsets=offsets, encoding=np.array(encoding),
                     image_shape=np.array(shape), image_dtype=np.array(np.dtype(dtype).str),
                     **meta)
    return path.stat().st_size


def merge(parts: list[Path], path: Path) -> int:
    """One shard at `path` (atomically) holding the parts' images and metadata
    in order; the parts are deleted after. Its size in bytes."""
    shards = [Shard(p) for p in parts]
    first = shards[0]
    encoded = np.concatenate([sh.encoded() for sh in shards])
    starts = np.cumsum([0] + [int(sh.offsets[-1]) for sh in shards])  # each part's, and the end
    offsets = np.concatenate([sh.offsets[:-1] + s for sh, s in zip(shards, starts)]
                             + [starts[-1:]]).astype(np.int64)
    keys = [k for k in first.files if k not in ("encoding", "image_shape", "image_dtype")]
    metas = [_metas(p, keys) for p in parts]  # each part opened once
    meta = {key: np.concatenate([m[key] for m in metas]) for key in keys}
    size = _save(path, encoded, offsets, first.encoding, first.shape, first.dtype, meta)
    for p in parts:
        p.unlink()
    return size


def _member_start(path: Path, name: str) -> int:
    """Where the data of array `name` starts in an uncompressed .npz: after its
    zip local header and its .npy header."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: {name} is compressed; shards are written uncompressed")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}[version]
        read_header(f)
        return f.tell()


class Shard:
    """One shard, read lazily: metadata arrays by name, images one by one
    (each image's bytes read from the file alone)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with np.load(self.path) as z:
            self.files = [f for f in z.files if f not in ("encoded", "offsets")]
            self.encoding = str(z["encoding"])
            self.shape = tuple(int(x) for x in z["image_shape"])
            self.dtype = np.dtype(str(z["image_dtype"]))
            self.offsets = z["offsets"]
        self._start = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def meta(self, key: str) -> np.ndarray:
        return _metas(self.path, [key])[key]

    def encoded(self) -> np.ndarray:
        with np.load(self.path) as z:
            return z["encoded"]

    def image(self, i: int) -> np.ndarray:
        if self._start is None:
            self._start = _member_start(self.path, "encoded")
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        # a read of its own (no shared file position: FFCV's writer forks)
        with open(self.path, "rb") as f:
            f.seek(self._start + lo)
            data = f.read(hi - lo)
        return decode(data, self.encoding, self.shape, self.dtype)

    def images(self) -> np.ndarray:
        return np.stack([self.image(i) for i in range(len(self))])


def covered(pool: Path, c: int) -> list[tuple[int, int, Path]]:
    """(first, stop, path) of class `c`'s shards in a generation config's pool,
    by first index."""
    found = [shard_range(p)[1:] + (p,) for p in Path(pool).glob(f"shard-{c:05d}-*.npz")]
    return sorted((first, first + count, p) for first, count, p in found)


def paths(folder: Path) -> list[Path]:
    """The shards holding a finished generate stage's range, in (class, index)
    order: in its config's pool (plan/layout.py), named by its manifest."""
    from synscale.plan.layout import pool_of
    manifest = state.read_json(Path(folder) / "manifest.json")
    pool = pool_of(folder, manifest["pool"])
    return [pool / name for name in manifest["shards"]]


def meta_of(folders, key: str) -> np.ndarray:
    """One metadata array over every shard of these generate stages, in their order."""
    return np.concatenate([Shard(p).meta(key) for f in folders for p in paths(f)])


class Rows:
    """The images of some generate stages as rows sorted by (class, index),
    decoded on demand: with `per_class`, a class's first `per_class` images
    (a shard may hold more: the pool keeps what any chunk rendered). Holds
    per-row locations (16 bytes per image) and, per process, the header of
    the one shard last read: memory independent of the row count and of the
    shard size."""

    def __init__(self, folders, per_class: int | None = None):
        self.files = list(dict.fromkeys(p for f in folders for p in paths(f)))
        labels, indices, where, self.keys, self.take = [], [], [], [], []
        for k, p in enumerate(self.files):
            with np.load(p) as z:
                take = np.arange(len(z["offsets"]) - 1)
                if per_class is not None:
                    take = take[z["indices"] < per_class]
                labels.append(z["labels"][take])
                indices.append(z["indices"][take])
                if k == 0:  # the metadata every shard of these stages holds
                    self.keys = [f for f in z.files if f not in ("encoded", "offsets")]
            self.take.append(take)
            where.append(np.stack([np.full(len(take), k), take], axis=1))
        labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        indices = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
        order = np.lexsort((indices, labels))
        self.labels, self.indices = labels[order], indices[order]
        twice = (np.diff(self.labels) == 0) & (np.diff(self.indices) == 0)
        if twice.any():
            i = int(np.flatnonzero(twice)[0])
            raise ValueError(f"class {self.labels[i]} image {self.indices[i]} is in two shards "
                             f"of {Path(self.files[0]).parent}")
        self.where = (np.concatenate(where) if where else np.zeros((0, 2), int))[order]
        self.order = order  # row -> position in shard order (to align metadata)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, row: int) -> np.ndarray:
        k, i = self.where[row]
        return _shard(str(self.files[k])).image(int(i))

    def meta(self, key: str) -> np.ndarray:
        """A metadata array aligned with the rows."""
        return self.metas([key])[key]

    def metas(self, keys) -> dict[str, np.ndarray]:
        """Metadata arrays aligned with the rows, each shard opened once."""
        keys = list(keys)
        if not self.files:
            return {k: np.zeros(0) for k in keys}
        parts = [_metas(p, keys) for p in self.files]
        return {k: np.concatenate([m[k][t] for m, t in zip(parts, self.take)])[self.order]
                for k in keys}


def _metas(path: Path, keys) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in keys}


@lru_cache(maxsize=1)
def _shard(path: str) -> Shard:
    return Shard(Path(path))
