"""What a plan will cost in compute, before it runs: device-hours (GPU-hours
for the kinds a Slurm study gives GPUs, CPU-hours otherwise) per stage kind
and in total, and the wall time with each kind's `max_parallel` tasks at once.

Each stage's work (images rendered, rows packed, samples trained, images
evaluated) over a rate. The rates come from a pilot (`launch --pilot` runs a
shrunk copy of the study on the cluster and writes calibration.json) or,
without one, from the planning rules below, which the README states and the
dry-run marks as such:
- generation: images/s of one task per generator (`GENERATE_RATE`, one
  A100 at 50 sampler steps with guidance), in proportion to 50 / steps, and
  about twice as fast without guidance (one denoiser call a step, not two);
  a class's last batch counts whole (plan/batches.py renders it whole), and
  only the images its config's pool lacks count (`covered`: what is there,
  or what the study already plans when an addition is priced);
- pack: `PACK_RATE_PER_CPU` rows/s per CPU (measured: 438 per writer
  worker at 256 px, tools/bench_pack.py);
- training: forward FLOPs per sample from the model built on torch's meta
  device (per transformer layer 24*s*h^2 + 4*s^2*h, Kaplan et al. 2020),
  three times that for forward and backward, at `MFU` of the device's peak;
- evaluation: forward only, the same rule.
Nothing here runs a model: one pass over the stage specs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from synscale.plan.batches import gaps, rendered_images, whole_batches

# images/s of one generate task on one A100 80GB at the usual settings (fp16, 50 steps,
# guidance on): order-of-magnitude planning figures; a pilot measures the real ones
GENERATE_RATE = {"stable-diffusion": 1.6, "imagen": 0.2, "muse": 8.0,
                 "embedded-ddpm": 150.0}  # the embedded DDPM: on a CPU core, measured
PACK_RATE_PER_CPU = 400.0
PEAK_FLOPS = {"gpu": 312e12, "cpu": 1.5e11}  # A100 bf16 dense; one CPU core, fp32 (measured)
MFU = 0.35
ORDER = ("caption", "generate", "pack", "curate", "train", "evaluate")


@dataclass
class KindCost:
    stages: int = 0
    device: str = "cpu"           # what the hours are of
    devices_per_stage: int = 1    # GPUs (or CPUs) one stage holds
    seconds: float = 0.0          # summed over stages
    longest: float = 0.0          # the longest stage
    source: str = "table"         # "calibration" when every rate came from calibration.json
    parallel: int = 1             # stages at once

    @property
    def hours(self) -> float:
        return self.seconds * self.devices_per_stage / 3600

    @property
    def wall_s(self) -> float:
        return max(self.longest, self.seconds / max(1, min(self.parallel, self.stages)))


def generate_key(spec: dict) -> str:
    """What a generate stage's speed depends on (not its classes or prompts)."""
    keys = ("generator", "weights", "steps", "scheduler", "resolution", "precision",
            "attention", "channels_last", "compile", "batch_size", "options")
    # set only where a study sets it, so that calibrations recorded before it still match
    text = {"text_encoder_precision": spec["text_encoder_precision"]} \
        if spec.get("text_encoder_precision") else {}
    return json.dumps({**{k: spec.get(k) for k in keys}, **text, "guided": spec["guidance"] > 0},
                      sort_keys=True)


def model_key(model: dict, image_shape) -> str:
    return json.dumps({**model, "image_shape": list(image_shape)}, sort_keys=True)


def read_calibration(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def forward_flops(size) -> float:
    """Forward FLOPs per sample of a footprint.ModelSize's transformer towers."""
    return sum(depth * (24 * s * h * h + 4 * s * s * h) for s, h, _, depth in size.layers) \
        or 2.0 * size.params


def estimate(study, plan, backend: str, calibration: dict | None = None,
             only: set[str] | None = None, covered=None) -> dict[str, KindCost]:
    """Cost per kind of the plan's stages (of those in `only`, when given:
    the stages an addition to a study would run; the rest are read for the
    inputs and models they hand on). `covered(content)`: class -> the index
    ranges a generation config already has (chunk_coverage, pool_coverage);
    a generate stage costs only the images outside them."""
    from synscale.plan import footprint
    from synscale.stages.train import step_count
    from synscale.study.schema import Resources, TrainSection
    from synscale.study.specs import parse

    rates = (calibration or {}).get("rates", {})
    out: dict[str, KindCost] = {}
    shape = footprint.image_shape(study)
    trained: dict[str, tuple] = {}  # train stage -> (model key, size)

    def kind_cost(kind: str) -> KindCost:
        if kind not in out:
            res = study.resources.get(kind) or Resources()
            device, count = footprint.devices(study, kind, backend)
            out[kind] = KindCost(device=device, devices_per_stage=count,
                                 parallel=res.max_parallel if backend == "slurm"
                                 else study.backend.workers, source="calibration")
        return out[kind]

    def add(c: KindCost, seconds: float, measured: bool) -> None:
        c.stages += 1
        c.seconds += seconds
        c.longest = max(c.longest, seconds)
        if not measured:
            c.source = "table"

    # The previous training's model and recipe dicts and what they gave: a plan's
    # trainings share a few (expand builds each once), and 10^6 of them would
    # otherwise serialize and parse the same ones 10^6 times.
    last: dict = {}
    for s in plan.stages:
        if only is not None and s.id not in only and s.kind != "train":
            continue
        c = kind_cost(s.kind)
        spec = s.spec
        if s.kind == "generate":
            rate = _rate(rates, "generate", generate_key(spec), spec["generator"])
            have = covered(s.content_key) if covered else {}
            add(c, to_render(spec, have) / (rate or _generate_rate(spec)), rate is not None)
        elif s.kind == "pack":
            rows = footprint.pack_rows(study, s, [plan.by_id[i] for i in s.inputs
                                                  if plan.by_id[i].kind == "generate"])
            rate = rates.get("pack_per_cpu")
            add(c, rows / ((rate or PACK_RATE_PER_CPU) * c.devices_per_stage), rate is not None)
        elif s.kind == "train":
            if spec["model"] is not last.get("model") or spec["recipe"] is not last.get("raw"):
                last = {"model": spec["model"], "raw": spec["recipe"],
                        "key": model_key(spec["model"], shape),
                        "size": footprint.model_size(spec["model"], spec["num_classes"], shape),
                        "recipe": parse(TrainSection, spec["recipe"], "recipe")}
            key, size, recipe = last["key"], last["size"], last["recipe"]
            trained[s.id] = (key, size)
            if only is not None and s.id not in only:
                continue  # its evaluations may be new
            samples = step_count(recipe, spec["images_per_class"] * spec["num_classes"]) \
                * recipe.batch_size
            arch = spec["model"].get("arch")
            rate = _rate(rates, "train", key, arch)  # samples/s per device
            per_device = rate or PEAK_FLOPS[c.device] * MFU / (3 * forward_flops(size))
            add(c, samples / (per_device * c.devices_per_stage), rate is not None)
        elif s.kind == "evaluate":
            key, size = trained.get(s.inputs[0], (None, None))
            images = _eval_images(study, spec)
            rate = _rate(rates, "evaluate", key, plan.by_id[s.inputs[0]].spec["model"].get("arch")) \
                if key else None
            per_device = rate or (PEAK_FLOPS[c.device] * MFU / forward_flops(size)
                                  if key else 1000.0)
            add(c, images / (per_device * c.devices_per_stage), rate is not None)
        else:  # caption and curate: small beside the rest; counted, not timed
            add(c, 0.0, False)
    return {k: out[k] for k in ORDER if k in out and out[k].stages}


def to_render(spec: dict, have: dict) -> int:
    """Images a generate stage's batches render, given what its config has
    (class -> sorted (first, stop) ranges): whole batches over each gap."""
    (lo, hi), (a, b), size = spec["classes"], spec["indices"], spec["batch_size"]
    top = whole_batches(b, size)  # the last batch is rendered, and kept, whole
    return sum(rendered_images(x, y, size) for c in range(lo, hi)
               for x, y in gaps(have.get(c, ()), a, top))


def chunk_coverage(stages) -> dict[str, dict[int, list[tuple[int, int]]]]:
    """config content -> class -> the index ranges these generate stages hold."""
    out: dict[str, dict[int, list]] = {}
    for s in stages:
        if s.kind == "generate":
            (lo, hi), a = s.spec["classes"], s.spec["indices"][0]
            b = whole_batches(s.spec["indices"][1], s.spec["batch_size"])
            per = out.setdefault(s.content_key, {})
            for c in range(lo, hi):
                per.setdefault(c, []).append((a, b))
    return {k: {c: sorted(r) for c, r in v.items()} for k, v in out.items()}


def _rate(rates: dict, kind: str, key: str, name: str | None) -> float | None:
    """A pilot's rate for this exact config, else a hand-written one for its
    generator or architecture ({"generate": {"imagen": 0.15}}), else None."""
    table = rates.get(kind, {})
    return table.get(key) or (table.get(name) if name else None)


def _generate_rate(spec: dict) -> float:
    base = GENERATE_RATE[spec["generator"]]
    return base * 50 / spec["steps"] * (1.0 if spec["guidance"] > 0 else 2.0)


# images per class of an evaluation set when its folder is not counted here (ImageNet's val)
EVAL_IMAGES_PER_CLASS = 50


def _eval_images(study, spec: dict) -> int:
    if study.data.dataset == "digits":
        return 10 * study.data.test_per_class
    from synscale.prompts.classes import of_data
    from synscale.study.specs import DataSpec, parse
    return len(of_data(parse(DataSpec, spec["data"]))) * EVAL_IMAGES_PER_CLASS


def total(kinds: dict[str, KindCost]) -> dict:
    return {"gpu_hours": sum(k.hours for k in kinds.values() if k.device == "gpu"),
            "cpu_hours": sum(k.hours for k in kinds.values() if k.device == "cpu"),
            # the kinds run one after another (each reads the one before)
            "wall_hours": sum(k.wall_s for k in kinds.values()) / 3600}


def as_json(kinds: dict[str, KindCost]) -> dict:
    return {"kinds": {k: {"stages": c.stages, "device": c.device, "hours": round(c.hours, 3),
                          "wall_hours": round(c.wall_s / 3600, 3), "rates_from": c.source}
                      for k, c in kinds.items()},
            **{k: round(v, 3) for k, v in total(kinds).items()}}
