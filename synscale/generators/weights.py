"""Where a checkpoint's files are: a local folder, or a Hugging Face id found in
the local cache. Nothing is downloaded here: studies are validated on login
nodes and run on compute nodes that often have no network, so a missing
checkpoint must be an error before anything is submitted."""
from __future__ import annotations

import math
import os
from pathlib import Path


class WeightsError(ValueError):
    pass


def resolve(ref: str) -> Path:
    """The folder holding `ref`'s files (model_index.json or config.json at its root)."""
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise WeightsError(f"{ref}: a file; expected a folder saved with save_pretrained")
        return local
    if ref.startswith((".", "/", "~")) or ref.count("/") != 1:
        raise WeightsError(f"{ref}: no such folder (and not a Hugging Face id 'owner/name')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    try:
        return Path(snapshot_download(ref, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, or a cache folder that is missing
        hint = "HF_HUB_OFFLINE=1 is set; " if os.environ.get("HF_HUB_OFFLINE") else ""
        raise WeightsError(
            f"{ref}: not in the Hugging Face cache ({HF_HUB_CACHE}); {hint}download it on a "
            f"machine with network (huggingface-cli download {ref}) or give a local folder"
        ) from e


def parameter_count(folder: Path, skip: tuple[str, ...] = ()) -> int:
    """Parameters in a saved pipeline's safetensors files, from their headers
    alone (no tensor is read): what a render will hold in memory. Component
    folders named in `skip` (one the loader leaves out) are not counted."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(folder).rglob("*.safetensors")):
        if set(f.relative_to(folder).parts[:-1]) & set(skip):
            continue
        with safe_open(str(f), framework="np") as st:
            total += sum(math.prod(st.get_slice(key).get_shape()) for key in st.keys())
    return total


def native_side(folder: Path) -> int | None:
    """The side, in pixels, a saved pipeline renders at, from its configs
    alone (nothing loaded): the denoiser's sample size times the autoencoder's
    downscaling, 2 ** (its blocks - 1), as diffusers' vae_scale_factor; None
    when the folder does not say."""
    import json

    for denoiser in ("unet", "transformer"):
        config = Path(folder) / denoiser / "config.json"
        if config.is_file():
            sample = json.loads(config.read_text()).get("sample_size")
            break
    else:
        return None
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    if not sample:
        return None
    for autoencoder in ("vae", "vqvae"):
        config = Path(folder) / autoencoder / "config.json"
        if config.is_file():
            blocks = json.loads(config.read_text()).get("block_out_channels", [0])
            return int(sample) * 2 ** (len(blocks) - 1)
    return int(sample)  # a pixel-space denoiser (IF)
