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
- a class's last batch is rendered whole even when the size ends inside it;
  the images past the size are dropped.

The last rule is the choice the alternative would make hard: were the last
batch rendered short, growing the size would put its images in a longer
batch and change them, while their ids (and the trainings that read them)
stay the same. Rendering it whole costs at most b - 1 images per class and
config, none when the size is a multiple of b, and the dry run says how many
(`padding_note`). With it, growing a size, re-cutting shards, chunks or
`classes_per_task` leaves every image bit-identical; only `batch_size`
itself changes the images' last bits.
"""
from __future__ import annotations


def render_batches(start: int, stop: int, batch: int) -> list[tuple[int, int]]:
    """(first index, images kept) of each sampler batch covering [start, stop)
    of one class. `start` is a multiple of `batch`; every batch renders `batch`
    images, and the last one keeps only those below `stop`."""
    if start % batch:
        raise ValueError(f"images from index {start} cannot start a sampler batch of {batch}: "
                         "shards and chunks start at multiples of batch_size")
    return [(b, min(batch, stop - b)) for b in range(start, stop, batch)]


def rendered_per_class(per_class: int, batch: int) -> int:
    """Images a class's batches render for `per_class` kept ones."""
    return -(-per_class // batch) * batch


def padding_note(per_class: int, batch: int) -> str | None:
    """What rendering the last batch whole costs, when it costs anything."""
    extra = rendered_per_class(per_class, batch) - per_class
    if not extra:
        return None
    divisors = [d for d in range(batch, 0, -1) if per_class % d == 0][:3]
    return (f"[generate] batch_size = {batch}: each class's last batch renders {extra} images "
            f"past the {per_class} kept ({extra / per_class:.1%} more generation), so that no "
            f"image depends on the size; a batch_size dividing {per_class} "
            f"({', '.join(map(str, divisors))}, ...) renders none")
