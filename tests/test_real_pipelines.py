"""The generate stage at the real models' shapes: Stable Diffusion 1.5 at
512 px, DeepFloyd IF stage I-M then II-M to 256 px (T5-XXL's 4.8B-parameter
encoder included) and aMUSEd-256, built from their published configurations
with random weights (tools/real_pipelines.py), each saved as a checkpoint,
rendered by the generate stage into JPEG shards and packed. bf16, as these
models are run on GPUs (and what keeps IF within this machine's memory)."""
import json

import pytest

from conftest import record_figure, run_tool

# IF's render holds ~12.8 GB: beside the Slurm tests (a few GB) it fits a 24 GB machine,
# beside the CLIP-L ranks (18.9 GB, marked "memory": run alone after the rest) it does not
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
    result = {p["name"]: p for p in json.loads(r.stdout)["pipelines"]}
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
            f"{name} (real configuration, random weights, bf16): {p['build']['params'] / 1e9:.2f}B "
            f"parameters, {p['build']['bytes'] / 1e9:.1f} GB saved; build {p['build']['seconds']:.0f} s "
            f"/ {p['build']['peak_rss_gb']:.1f} GB, generate 2 images "
            f"{p['generate']['seconds']:.0f} s / {p['generate']['peak_rss_gb']:.1f} GB peak RSS "
            f"(estimated {p['estimated_node_gb']:.1f}), pack {p['pack']['seconds']:.0f} s")
    assert result["sd15"]["nsfw"] is not None  # SD 1.5's safety checker ran, per image
