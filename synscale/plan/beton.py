"""What a pack's data.beton occupies on disk, as FFCV lays the file out
(ffcv/writer.py and memory_allocator.py, read for this):

- the header, the field descriptors and every row's metadata, padded to a
  page;
- then whole pages (8 MiB, DatasetWriter's default): each writer process
  takes rows 100 at a time and fills pages of its own, a row never split
  across two, and writes every page whole, its last one mostly empty;
- then the allocation table, 24 bytes per row's stored field.

A pack of up to a hundred small images is so two pages (16.8 MB) whatever
its images weigh, one of a few hundred a page more per writer process; a
large one is its rows' bytes plus about half a page per writer process. A row's bytes are the digits'
float arrays exactly; a JPEG row (quality 90, the longest side at most
resolution / 0.875, never enlarged) depends on what the images show, so for
a real pack it is measured on a sample of the study's own images when their
folder is here (photographs take 2-3 bits per pixel, the procedural images
of the tests 1.5), and taken from footprint.BETON_BITS_PER_PIXEL otherwise.
"""
from __future__ import annotations

from functools import cache

PAGE = 8 * 2**20   # DatasetWriter's page_size: 4 x MIN_PAGE_SIZE (2 MiB)
CHUNK = 100        # from_indexed_dataset's chunksize: rows a writer process takes at once
HEADER = 4096      # header and field descriptors, more than they take
ALLOCATION = 24    # ALLOC_TABLE_TYPE: sample id, pointer, size (u8 each)
# a row's metadata (get_metadata_type: the fields' own, aligned): the image's
# (mode, width, height, pointer: 13 bytes) or the array's pointer, the label,
# and the row number of a pack with captions
META = {"rgb": 24, "array": 16}
JPEG_HEADERS = 620  # cv2's JFIF headers and Huffman and quantization tables
SAMPLE = 16         # real images encoded to measure a row's bytes


def _pages(n: float) -> int:
    return -(-int(n) // PAGE)


def file_bytes(rows: int, row_bytes: float, kind: str, workers: int,
               captions: bool = False) -> int:
    """Bytes of a data.beton of `rows` rows of about `row_bytes` each."""
    meta = META[kind] + (8 if captions else 0)
    head = _pages(HEADER + rows * meta) * PAGE
    if rows <= 0:
        return head
    busy = max(1, min(workers, -(-rows // CHUNK)))  # processes that get rows
    per_page = max(1, PAGE // max(1, int(row_bytes)))
    pages = sum(-(-(rows // busy + (w < rows % busy)) // per_page) for w in range(busy))
    return head + pages * PAGE + ALLOCATION * rows


def jpeg_row_bytes(side: int, bits_per_pixel: float) -> float:
    return side * side * bits_per_pixel / 8 + JPEG_HEADERS


@cache
def sampled_row_bytes(train_dir: str, keys: tuple[str, ...], max_side: int) -> float | None:
    """Mean bytes of a JPEG row made from the first image of up to SAMPLE
    classes spread over the list, as the pack makes it; None when the folder
    is not here (a study planned away from its data) or nothing decodes."""
    import cv2
    import numpy as np

    from synscale.data.decode import rgb
    from synscale.data.folders import images_of

    picked = keys[::max(1, len(keys) // SAMPLE)][:SAMPLE]
    sizes = []
    for key in picked:
        try:
            (path,) = images_of(train_dir, key, 1)
            image = np.asarray(rgb(path))
        except (OSError, ValueError):  # BadImage too: the pack says which
            continue
        h, w = image.shape[:2]
        ratio = max_side / max(h, w)
        if ratio < 1:  # FFCV's resizer: the longest side to max_resolution, INTER_AREA
            image = cv2.resize(image, (int(ratio * w), int(ratio * h)),
                               interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                [int(cv2.IMWRITE_JPEG_QUALITY), 90])
        if ok:
            sizes.append(data.size)
    return float(np.mean(sizes)) if sizes else None
