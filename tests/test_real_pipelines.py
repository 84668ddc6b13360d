"""The generate stage at the real models' shapes: Stable Diffusion 1.5 at
512 px, DeepFloyd IF stage I-M then II-M to 256 px (T5-XXL's 4.8B-parameter
encoder included) and aMUSEd-256, built from their published configurations
with random weights (tools/real_pipelines.py), each saved as a checkpoint,
rendered by the generate stage into JPEG shards and packed. bf16, as these
models are run on GPUs, where the CPU computes bf16 in hardware; fp32 where
it emulates it (~300x slower convolutions), IF's T5-XXL kept in bf16 (in
fp32 it alone is 19 GB)."""
import json

import pytest

from conftest import record_figure, run_tool

# IF's render holds ~15 GB (T5-XXL in bf16, UNets in fp32): beside the Slurm tests (a few
# GB) it fits a 24 GB machine, beside the CLIP-L ranks (18.9 GB, marked "memory": run alone
# after the rest) it does not
pytestmark = pytest.mark.slow

# parameters each model's authors publish, per component the render loads
PUBLISHED = {
    "sd15": {"unet": 860e6, "vae": 84e6, "text_encoder": 123e6, "safety_checker": 304e6},
    "if-m": {"stage1/text_encoder": 4.76e9, "stage1/unet": 400e6, "stage2/unet": 450e6},
    "amused-256": {"transformer": 603e6, "vqvae": 146e6, "text_encoder": 124e6},
}
SIDE = {"sd15": 512, "if-m": 256, "amused-256": 256}


def test_real_configurations_render_two_images_each_into_shards_and_pack():
    r = run_tool("real_pipelines.py", "--json", timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    data = json.loads(r.stdout)
    result = {p["name"]: p for p in data["pipelines"]}
    assert set(result) == set(PUBLISHED)
    for name, p in result.items():
        built = p["build"]["components"]
        assert set(built) == set(PUBLISHED[name]), (name, built)
        for part, n in PUBLISHED[name].items():
            # DeepFloyd round loosely (and IF-I-M's widths are inferred: tools/real_configs)
            assert built[part] == pytest.approx(n, rel=0.1), (name, part, built[part])
        assert p["image_shape"] == [SIDE[name], SIDE[name], 3], name
        assert p["image_std"] > 1, name  # pixels, not a blank canvas
        assert p["encoding"] == "jpeg" and p["generate"]["summary"]["images_rendered"] == 2
        assert p["pack_rows"] == 2 and p["pack_shape"] == [3, 224, 224], name
        # the dry-run's footprint: parameters counted from the saved files, and
        # the generate stage's memory rule against the process's own peak
        assert p["estimated_params"] == p["build"]["params"], name
        assert p["generate"]["peak_rss_gb"] == pytest.approx(p["estimated_node_gb"], rel=0.25), name
        record_figure(
            f"{name} (real configuration, random weights, {p['precision']}, text encoder "
            f"{p['text_encoder_precision']}): {p['build']['params'] / 1e9:.2f}B "
            f"parameters, {p['build']['bytes'] / 1e9:.1f} GB saved; build {p['build']['seconds']:.0f} s "
            f"/ {p['build']['peak_rss_gb']:.1f} GB, generate 2 images "
            f"{p['generate']['seconds']:.0f} s / {p['generate']['peak_rss_gb']:.1f} GB peak RSS "
            f"(estimated {p['estimated_node_gb']:.1f}), pack {p['pack']['seconds']:.0f} s")
    assert result["sd15"]["nsfw"] is not None  # SD 1.5's safety checker ran, per image
    # 16-bit only where this CPU computes it natively; T5-XXL never in fp32 (19 GB)
    half = "bf16" if data["cpu_native_bf16"] else "fp32"
    assert {p["precision"] for p in result.values()} == {half}
    assert result["if-m"]["text_encoder_precision"] == "bf16"
