#!/usr/bin/env python
"""Training samples per second of a ViT through DeepSpeed, as the train stage
runs it (AdamW handed to deepspeed.initialize, the study's precision).

    tools/bench_train.py [--arch vit|vit_base_patch16_224|...] [--batch 64]
                         [--steps 20] [--precision fp32|bf16] [--json]

`vit` is the embedded study's tiny ViT (width 64, depth 2, 8x8 grayscale
digits); a timm name trains at 224 px RGB (ViT-B/16: vit_base_patch16_224).

Feeds random batches (the input pipeline has its own benchmark,
bench_loader.py), times STEPS optimizer steps after 3 warm-up steps, and
reports samples/s and, on a GPU with a known peak, the fraction of its dense
bf16 peak that the measured FLOPs reach (model FLOPs from torch's
FlopCounterMode on one forward, times 3 for forward and backward).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Dense bf16 peak, TFLOP/s, from the vendors' data sheets (SXM parts).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="vit", help="vit (the embedded tiny one) or a timm name")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _cuda() else "cuda")
    import deepspeed
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from synscale.models.vit import build_classifier
    from synscale.runtime.distributed import ensure_initialized

    ensure_initialized()
    from synscale.study.specs import ModelSpec

    if args.arch == "vit":
        spec, shape, classes = ModelSpec("vit", width=64, depth=2, heads=2, patch_size=2,
                                         mlp_ratio=2.0), (1, 8, 8), 10
    else:
        spec, shape, classes = ModelSpec(args.arch), (3, 224, 224), 1000
    model = build_classifier(spec, classes, shape)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, classes, (args.batch,))
    with FlopCounterMode(display=False) as counter:
        model(x[:1])
    flops_per_sample = 3 * counter.get_total_flops()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config={
        "train_batch_size": args.batch, "train_micro_batch_size_per_gpu": args.batch,
        "bf16": {"enabled": args.precision == "bf16"}, "steps_per_print": 10**9})
    x, y = x.to(engine.device), y.to(engine.device)
    if args.precision == "bf16":
        x = x.to(torch.bfloat16)
    criterion = torch.nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in range(3 + args.steps):
        if step == 3:
            sync()
            start = time.perf_counter()
        loss = criterion(engine(x).float(), y)
        engine.backward(loss)
        engine.step()
    sync()
    seconds = time.perf_counter() - start
    rate = args.steps * args.batch / seconds
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    result = {"device": name, "arch": args.arch, "image_shape": list(shape), "batch": args.batch,
              "precision": args.precision, "samples_per_second": rate,
              "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "tflops_per_second": rate * flops_per_sample / 1e12,
              "peak_bf16_fraction": (rate * flops_per_sample / 1e12 / peak) if peak else None}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value:.4g}" if isinstance(value, float) else f"{key:>20}: {value}")
    return 0


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
