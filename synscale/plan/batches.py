"""Which generated images are rendered together: a function of the images alone.

A sampler's batched arithmetic (convolutions, attention, matmuls, and on
GPUs the cuBLAS/cuDNN algorithm chosen for the batch's shape) rounds
differently depending on which images share a batch: the same seed rendered
beside other images differs in its last float bits (measured on the
embedded DDPM: up to 2.2e-6 after 10 steps). Per-image seeds fix the noise,
not the rounding. So an image is a function of its seed, class, index and
config *and of its batch*, and the batch is fixed here by the images alone:

- batch k of a class holds indices [k*b, (k+1)*b), b = `[generate] batch_size`;
- shards (`shard_images`) and chunks of a generate stage start at multiples
  of b, so they are filled with whole batches and never cut one;
- a class's last batch is rendered whole even when the size ends inside it,
  and the images past the size are kept in the config's pool (readers take
  the first n of a class by index).

The last rule is the choice the alternative would make hard: were the last
batch rendered short, growing the size would put its images in a longer
batch and change them, while their ids (and the trainings that read them)
stay the same. Rendering it whole costs at most b - 1 images per class and
config, none when the size is a multiple of b, and the dry run says how many
(`padding_note`); keeping them makes a later, larger size find them. With
it, growing a size, re-cutting shards, chunks or `classes_per_task` leaves
every image bit-identical; only `batch_size` itself changes the images' last
bits (a size grown after a batch_size change renders the batch holding its
first new image whole, and keeps the new images of it).
"""
from __future__ import annotations


def windows(start: int, stop: int, batch: int) -> list[tuple[int, int, int]]:
    """(first index of the batch, first kept, one past the last kept) of each
    sampler batch covering [start, stop) of one class. Every batch renders
    `batch` images from a multiple of `batch` and keeps those in [start, stop):
    all of them where start and stop fall on batch boundaries, as a shard's
    do; fewer at a class's end, or where images before `start` are already
    there (a size grown from one that was not a multiple of batch_size)."""
    first = start - start % batch
    return [(b, max(b, start), min(b + batch, stop)) for b in range(first, stop, batch)]


def whole_batches(stop: int, batch: int) -> int:
    """`stop` rounded up to whole batches: what rendering [.., stop) of a class
    renders, and keeps."""
    return -(-stop // batch) * batch


def rendered_images(start: int, stop: int, batch: int) -> int:
    """Images the batches covering [start, stop) of one class render."""
    return len(windows(start, stop, batch)) * batch


def padding_note(per_class: int, batch: int) -> str | None:
    """What rendering the last batch whole costs, when it costs anything."""
    extra = whole_batches(per_class, batch) - per_class
    if not extra:
        return None
    divisors = [d for d in range(batch, 0, -1) if per_class % d == 0][:3]
    return (f"[generate] batch_size = {batch}: each class's last batch renders {extra} images "
            f"past the {per_class} the study reads ({extra / per_class:.1%} more generation, "
            f"kept for a larger size), so that no image depends on the size; a batch_size "
            f"dividing {per_class} ({', '.join(map(str, divisors))}, ...) renders none")


def gaps(have, start: int, stop: int) -> list[tuple[int, int]]:
    """The parts of [start, stop) that no range in `have` ((first, stop, ...),
    sorted by first) holds."""
    out, at = [], start
    for first, end, *_ in have:
        if first > at:
            out.append((at, min(first, stop)))
        at = max(at, end)
        if at >= stop:
            break
    if at < stop:
        out.append((at, stop))
    return [(a, b) for a, b in out if a < b]


def pieces(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) cut where a multiple of `size` falls: the shards of a gap."""
    cuts = [start, *range(start - start % size + size, stop, size), stop]
    return list(zip(cuts[:-1], cuts[1:]))
