"""The pack stage at a real shape: 20,000 RGB images of 256 px (3.9 GB of raw
pixels) written through the shard writer, then packed by the pack runner in
its own process, whose peak memory must not depend on the image count."""
import json

import pytest

from conftest import record_figure, run_tool

pytestmark = pytest.mark.slow


def test_twenty_thousand_256px_images_pack_in_bounded_memory():
    r = run_tool("bench_pack.py", "--images", "20000", "--json", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads(r.stdout)["rows"]
    assert row["images"] == row["rows"] == 20000
    assert row["distinct_class_counts"] == [1000]  # 20 classes, every image packed once
    raw_gb = row["raw_bytes"] / 1e9
    assert raw_gb > 3.9
    # JPEG 95 shards: at most a quarter of the raw pixels
    assert row["shard_bytes"] <= row["raw_bytes"] / 4, row
    # the pack process and each of FFCV's writer workers: under 1.5 GB (all
    # 20k images decoded at once would be 3.9 GB)
    assert row["peak_rss_gb"] < 1.5 and row["peak_worker_rss_gb"] < 1.5, row
    record_figure(f"pack of 20k 256-px images: {row['images_per_s']:.0f} images/s, peak RSS "
                  f"{row['peak_rss_gb']:.2f} GB (largest worker {row['peak_worker_rss_gb']:.2f}), "
                  f"shards {row['shard_bytes'] / 1e9:.2f} GB = {row['shard_share_of_raw']:.1%} "
                  f"of {raw_gb:.2f} GB raw")
