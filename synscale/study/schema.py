"""The study file's schema: one dataclass per TOML table.

Each field carries its documentation and its rules in `metadata`, so the
loader (load.py), the README's key reference and the error messages all read
the same source. Fields marked `axis` are sweep axes: the TOML may give one
value or a list, and the study stores a tuple.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synscale.plan.graph import KINDS

# The choice lists a study file offers. Each is defined by the registry of the
# thing it names (generators/, prompts/, analysis/fit.py, ...), and
# tests/test_choices.py holds every list here equal to its registry. They are
# restated rather than imported because every stage runner imports this
# module: importing the registries would pull their packages (and, for code
# pinning, their data files: prompt lists, generator weights) into what every
# stage kind is deemed to run (backends/code.py).
GENERATORS = ("embedded-ddpm", "stable-diffusion", "imagen", "muse")
PROMPT_STRATEGIES = (
    "classnames", "classnames+description", "classnames+hypernyms",
    "classnames+hypernyms+places", "classnames+description+places",
    "clip-templates-7", "clip-templates-80", "word2sen", "in-captions",
)
# "default": the checkpoint's own sampler (the embedded DDPM's is ddpm).
SCHEDULERS = ("default", "ddpm", "ddim", "dpm-solver", "euler")
DEVICES = ("auto", "cuda", "cpu")  # runtime/device.py: auto takes a GPU when torch sees one
# mixture: real and generated images of one generation config at fixed shares
SOURCES = ("real", "synthetic", "mixture")
# [sweep]'s list of training-set sizes of each source
SIZE_KEYS = {source: f"{source}_images_per_class" for source in SOURCES}
DATASETS = ("digits", "imagefolder")
EVAL_SETS = ("digits-test", "imagenet-val", "imagenet-sketch", "imagenet-r",
             "imagenet-a", "imagenet-v2")
# Named timm ViTs for real-scale studies; "vit" builds a custom timm
# VisionTransformer from the width/depth/heads/patch_size keys.
ARCHS = ("vit", "vit_tiny_patch16_224", "vit_small_patch16_224",
         "vit_base_patch16_224", "vit_large_patch16_224")
# CLIP: "vit" builds a small open_clip CLIP from the same keys; open_clip's
# configurations by name; a timm ViT name gets open_clip's ViT-B-16 text tower.
CLIP_CONFIGS = ("ViT-S-32", "ViT-S-16", "ViT-M-32", "ViT-M-16", "ViT-B-32", "ViT-B-16", "ViT-L-14")
OBJECTIVES = ("classifier", "clip")
ZERO_SHOT_TEMPLATES = ("clip-templates-80", "clip-templates-7")
# prompt strategies that caption real images from their class alone
CAPTION_STRATEGIES = ("classnames", "classnames+description", "classnames+hypernyms",
                      "clip-templates-7", "clip-templates-80")
LAWS = ("power", "power+offset", "saturating")
BACKENDS = ("local", "slurm")
PRECISIONS = ("fp32", "bf16")
GENERATE_PRECISIONS = ("fp32", "fp16", "bf16")
SCORES = ("recognizability", "clip")
# data/shards.py's FORMATS, and "auto" (png for the embedded DDPM, jpeg for RGB generators)
IMAGE_FORMATS = ("auto", "png", "jpeg", "webp")
CURATION_SCORES = ("recognizability", "clip_score")


def spec(default: Any, doc: str, **rules: Any) -> Any:
    """A field with its one-line doc and validation rules.

    rules: type (int|float|str|bool), axis (scalar or non-empty list), list
    (a possibly empty list of values), choices, min, max, pattern (a regex
    the whole string matches, described to users by pattern_doc), path (must
    exist when the stage needs it).
    """
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"doc": doc, **rules})
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass(frozen=True)
class StudySection:
    # One folder under the run root: '.' and '..' name the root itself or its parent.
    name: str = spec("", "study name; names the run directory runs/<name>", type=str, required=True,
                     pattern=r"(?!\.\.?\Z)(?!-)[A-Za-z0-9_.-]+",
                     pattern_doc="one folder name of ASCII letters (A-Z, a-z), digits, '_', "
                                 "'.' and '-', not starting with '-' (it would read as an "
                                 "option), other than '.' and '..'")
    seed: int = spec(0, "study seed: data split, image seeds and training order derive from it",
                     type=int, min=0)
    description: str = spec("", "free text shown by --dry-run", type=str)
    max_scratch_tb: float = spec(0.0, "stop a launch whose estimated disk footprint (the "
                                 "dry-run's peak scratch) is above this many TB (0: no limit)",
                                 type=float, min=0.0)
    max_gpu_hours: float = spec(0.0, "stop a launch whose estimated GPU-hours (the dry-run's "
                                "cost, from the pilot's calibration or the planning rates) are "
                                "above this (0: no limit)", type=float, min=0.0)
    store: str = spec("", "a folder where finished stages live, shared by studies and a team "
                      "(launch --store overrides; empty: the run directory holds its own)",
                      type=str)


@dataclass(frozen=True)
class DataSection:
    dataset: str = spec("digits", "real dataset: the embedded sklearn digits or an image folder",
                        type=str, choices=DATASETS)
    test_per_class: int = spec(45, "digits: held-out real test images per class (never trained on)",
                               type=int, min=40)
    train_dir: str = spec("", "imagefolder: training images, one folder per class", type=str, path=True)
    val_dir: str = spec("", "imagefolder: real validation images, one folder per class", type=str,
                        path=True)
    classes: str = spec("", "imagefolder: class list name (imagenet-1k) or a file of class names",
                        type=str)
    metadata: str = spec("", "imagefolder: when each training image was made (.tsv/.csv with "
                         "columns image, timestamp), for curate.snapshots", type=str, path=True)
    resolution: int = spec(224, "imagefolder: training and evaluation image side, pixels",
                           type=int, min=8, max=1024)
    caption_pairs: str = spec("", "clip, imagefolder: real image-caption pairs (.tsv/.csv with "
                              "columns image, caption; image relative to train_dir)", type=str,
                              path=True)
    bad_images: str = spec("fail", "imagefolder: a file that does not decode as an image "
                           "fails its stage naming it (fail), or is left out and counted, the "
                           "next file of its class taking its place (skip)", type=str,
                           choices=("fail", "skip"))
    caption_prompts: str = spec("clip-templates-80", "clip: how real images without pairs are "
                                "captioned, a prompt strategy on their class name", type=str,
                                choices=CAPTION_STRATEGIES)


@dataclass(frozen=True)
class SweepSection:
    sources: tuple = spec(("real", "synthetic"), "data sources to train on", type=str, axis=True,
                          choices=SOURCES)
    real_images_per_class: tuple = spec((), "training-set sizes drawn from the real pool "
                                        "(nested per-class prefixes)", type=int, axis=True, min=1)
    synthetic_images_per_class: tuple = spec((), "training-set sizes drawn from generated images "
                                             "(nested prefixes of the largest)", type=int, axis=True,
                                             min=1)
    mixture_images_per_class: tuple = spec((), "mixture: training-set sizes, real and generated "
                                           "images together", type=int, axis=True, min=1)
    synthetic_shares: tuple = spec((0.5,), "mixture: share of generated images in the set and in "
                                   "every batch", type=float, axis=True, min=0.0, max=1.0)
    # Repeats are points of the same series (not an axis): the fit reads their
    # spread as measurement noise, and tools/fit_curves.py --suggest proposes them.
    repeats: dict = spec({}, "images per class -> trainings at that size, each with its own "
                         "seed (weights' init and data order; the images are the same); "
                         "sizes not listed train once", type=dict)


def split_counts(images_per_class: int, shares) -> list[int]:
    """Images per class each part of a mixture gets: floors, then the
    images left over to the largest remainders (the earlier part on a tie)."""
    exact = [images_per_class * s for s in shares]
    counts = [int(e) for e in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:images_per_class - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class GenerateSection:
    generators: tuple = spec(("embedded-ddpm",), "text-to-image models to render with", type=str,
                             axis=True, choices=GENERATORS)
    weights: dict = spec({}, "per generator: a local folder or Hugging Face id of its weights "
                         "(imagen: a list, stage I then the super-resolution stage II; the "
                         "embedded DDPM needs none)", type=dict)
    options: dict = spec({}, "per generator, its own settings (imagen: sr_steps, sr_guidance, "
                         "noise_level)", type=dict)
    prompts: tuple = spec(("classnames",), "prompt strategies (the embedded DDPM conditions on "
                          "the class label itself)", type=str, axis=True, choices=PROMPT_STRATEGIES)
    guidance: tuple = spec((0.0,), "classifier-free guidance t: eps = (1+t)*eps_c - t*eps_u "
                           "(diffusers guidance_scale = 1 + t)", type=float, axis=True, min=0.0)
    scheduler: str = spec("default", "sampler (default: the checkpoint's own)", type=str,
                          choices=SCHEDULERS)
    steps: int = spec(50, "sampler steps", type=int, min=1, max=5000)
    batch_size: int = spec(500, "images per sampler call: batch k of a class is its images "
                           "[k*b, (k+1)*b), the last one rendered whole", type=int, min=1)
    shard_images: int = spec(1000, "images per shard file (one class; whole sampler batches, "
                             "so a multiple of batch_size, each kept on disk until the shard "
                             "is whole)", type=int, min=1)
    image_format: str = spec("auto", "how generated images are stored: png (lossless), jpeg or "
                             "webp; auto: png for the embedded DDPM (its float samples, "
                             "bit-identical), jpeg for RGB generators", type=str,
                             choices=IMAGE_FORMATS)
    image_quality: int = spec(95, "jpeg and webp: encoder quality", type=int, min=1, max=100)
    keep_shards: bool = spec(True, "false: delete a generate stage's shards once its pack is "
                             "done (a later plan that needs them renders them again)", type=bool)
    classes_per_task: int = spec(5, "classes rendered by one generate stage", type=int, min=1)
    images_per_task: int = spec(0, "images of each class one generate stage renders, a "
                                "multiple of shard_images (0: all of them); a size grown "
                                "beyond a multiple of it adds stages", type=int, min=0)
    resolution: int = spec(0, "output side in pixels (0: the model's native size)", type=int,
                           min=0, max=4096)
    precision: str = spec("fp32", "weights and activations while rendering (fp16/bf16 on GPUs)",
                          type=str, choices=GENERATE_PRECISIONS)
    text_encoder_precision: str = spec("", "imagen: T5-XXL's own precision (4.8B of IF's 5.6B "
                                       "parameters), e.g. bf16 beside fp32 UNets on a CPU "
                                       "without native bf16; empty: as precision",
                                       type=str, choices=("",) + GENERATE_PRECISIONS)
    attention: str = spec("sdpa", "attention kernels: sdpa (torch's fused ones) or eager "
                          "(plain matmul and softmax)", type=str, choices=("sdpa", "eager"))
    channels_last: bool = spec(False, "NHWC memory format for the convolutions", type=bool)
    compile: bool = spec(False, "torch.compile the denoiser", type=bool)
    device: str = spec("auto", "where to render: auto (a GPU when there is one), cuda or cpu",
                       type=str, choices=DEVICES)
    scores: tuple = spec((), "per-image scores stored with the images, for curation: "
                         "recognizability, clip", type=str, list=True, choices=SCORES)
    score_classifier: str = spec("", "recognizability on image folders: a timm classifier of the "
                                 "study's classes (local folder or Hugging Face id)", type=str)
    score_clip_model: str = spec("", "clip: a CLIP model (local folder or Hugging Face id)",
                                 type=str)


@dataclass(frozen=True)
class PromptsSection:
    word2sen_model: str = spec("google/flan-t5-large", "word2sen: the seq2seq model, a local "
                               "folder or Hugging Face id", type=str)
    word2sen_template: str = spec("Write a sentence describing a photo of a {name}.",
                                  "word2sen: the model's input; {name} is the class name",
                                  type=str)
    word2sen_per_class: int = spec(20, "word2sen: sentences written per class", type=int, min=1)
    captions: str = spec("", "in-captions: a file of captions of real training images (.json: "
                         "class -> list; .tsv/.csv: columns class, caption); empty: caption "
                         "them with caption_model", type=str, path=True)
    caption_model: str = spec("Salesforce/blip2-opt-2.7b", "in-captions without a captions file: "
                              "the image-to-text model (BLIP-2 class) that captions the real "
                              "training images", type=str)
    captions_per_class: int = spec(20, "in-captions: real training images captioned per class",
                                   type=int, min=1)


@dataclass(frozen=True)
class ModelSection:
    objective: str = spec("classifier", "what is trained: a classifier of the class labels, or "
                          "a CLIP model on image-caption pairs", type=str, choices=OBJECTIVES)
    arch: str = spec("vit", "architecture (the image tower of a CLIP model)", type=str,
                     choices=ARCHS + CLIP_CONFIGS)
    width: tuple = spec((), "vit: embedding width (a sweep axis)", type=int, axis=True, min=8)
    depth: int = spec(2, "vit: transformer blocks", type=int, min=1)
    heads: int = spec(2, "vit: attention heads (must divide every width)", type=int, min=1)
    patch_size: int = spec(2, "vit: patch size in pixels", type=int, min=1)
    mlp_ratio: float = spec(2.0, "vit: MLP hidden size / width", type=float, min=0.5)
    embed_dim: int = spec(32, "clip, arch vit: joint embedding width (its text tower mirrors "
                          "the image tower)", type=int, min=1)
    context_length: int = spec(77, "clip: caption tokens (longer captions are cut)", type=int,
                               min=4, max=77)


@dataclass(frozen=True)
class TrainSection:
    batch_size: int = spec(64, "global batch size", type=int, min=1)
    micro_batch_size: int = spec(0, "most images one task computes at once; smaller than "
                                 "batch_size / tasks, gradients accumulate so the global batch "
                                 "stays batch_size (0: batch_size / tasks)", type=int, min=0)
    lr: float = spec(2e-3, "peak learning rate (AdamW)", type=float, min=0.0)
    weight_decay: float = spec(0.05, "AdamW weight decay", type=float, min=0.0)
    warmup_fraction: float = spec(0.1, "share of steps spent warming up, then cosine decay",
                                  type=float, min=0.0, max=0.9)
    label_smoothing: float = spec(0.1, "label smoothing of the training loss", type=float, min=0.0,
                                  max=0.5)
    mixup: float = spec(0.0, "mixup alpha (DeiT: 0.8); 0 turns it off", type=float, min=0.0)
    cutmix: float = spec(0.0, "cutmix alpha (DeiT: 1.0); 0 turns it off; with mixup, one of "
                         "the two per batch", type=float, min=0.0)
    randaugment: int = spec(0, "image folders: RandAugment magnitude (DeiT: 9), two ops per "
                            "image; 0 turns it off", type=int, min=0, max=30)
    epochs: float = spec(30.0, "steps = epochs * images / batch_size, clamped to "
                         "[min_steps, max_steps]", type=float, min=0.0)
    min_steps: int = spec(100, "fewest optimizer steps for any data size", type=int, min=1)
    max_steps: int = spec(1000, "most optimizer steps for any data size", type=int, min=1)
    zero_stage: int = spec(0, "DeepSpeed ZeRO stage: 1 partitions the optimizer state over "
                           "the ranks, 2 also the gradients, 3 also the weights", type=int,
                           choices=(0, 1, 2, 3))
    precision: str = spec("fp32", "training precision", type=str, choices=PRECISIONS)
    log_every: int = spec(50, "steps between logged losses (does not change results)", type=int,
                          min=1)
    checkpoint_every: int = spec(200, "steps between checkpoints; one is also saved when Slurm "
                                 "preempts or times out the job (does not change results)",
                                 type=int, min=1)
    loader_workers: int = spec(1, "FFCV loader threads (does not change results)", type=int, min=1)
    device: str = spec("auto", "where to train: auto (the job's GPUs when torch sees any), cuda "
                       "or cpu", type=str, choices=DEVICES)
    channels_last: bool = spec(False, "NHWC memory format for the patch embedding's convolution "
                               "(numerical noise only)", type=bool)
    compile: bool = spec(False, "torch.compile the model (numerical noise only; compiling takes "
                         "a while at the start)", type=bool)


@dataclass(frozen=True)
class EvaluateSection:
    sets: tuple = spec(("digits-test",), "real evaluation sets: " + ", ".join(EVAL_SETS) +
                       ", or a name of your own whose folder is in evaluate.dirs", type=str,
                       axis=True, pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
                       pattern_doc="a set name of ASCII letters, digits, '_', '.' and '-' "
                                   "(it names a column value and a plot)")
    batch_size: int = spec(500, "evaluation batch size", type=int, min=1)
    dirs: dict = spec({}, "folder of class folders per set but imagenet-val (which reads "
                      "data.val_dir): imagenet-sketch, -r, -a, -v2 or a set of your own",
                      type=dict)
    masks: dict = spec({}, "per set of your own that holds some of the classes: a file of "
                       "them (wnids or class names, one per line); the model is scored over "
                       "those only, as ImageNet-R and -A are", type=dict)
    partial: bool = spec(False, "score on an evaluation folder that lacks some of the classes "
                         "(each score says on how many it was computed); false: refused before "
                         "anything runs", type=bool)
    workers: int = spec(2, "image decoding processes per evaluation (does not change results)",
                        type=int, min=0)
    device: str = spec("auto", "where to evaluate: auto (a GPU when torch sees one), cuda or cpu",
                       type=str, choices=DEVICES)
    zero_shot_templates: tuple = spec(ZERO_SHOT_TEMPLATES, "clip: template sets that turn class "
                                      "names into zero-shot classifiers", type=str, axis=True,
                                      choices=ZERO_SHOT_TEMPLATES)


@dataclass(frozen=True)
class CurateSection:
    score: str = spec("recognizability", "quality filters: the per-image score they threshold",
                      type=str, choices=CURATION_SCORES)
    thresholds: tuple = spec((), "quality filters: keep the images scoring at least t; each t "
                             "adds curated trainings beside the unfiltered ones", type=float,
                             list=True)
    inverse: bool = spec(False, "quality filters: also train on each filter's complement "
                         "(the images scoring below t)", type=bool)
    safety: bool = spec(False, "also train without the images the safety checker flagged",
                        type=bool)
    applies_to: tuple = spec(("synthetic",), "training sources the quality and safety filters "
                             "curate (in a mixture, its generated part)", type=str, list=True,
                             choices=("synthetic", "mixture"))
    snapshots: tuple = spec((), "data age: real training sets keep the images dated up to each "
                            "year (needs data.metadata)", type=int, list=True)
    blends: dict = spec({}, "name -> {selector = share}: training sets drawn from several "
                        "generation configs at these proportions (a selector such as "
                        "'guidance=1.0' or 'generator=imagen' names one config)", type=dict)
    leave_one_out: tuple = spec((), "sources ('real' or a selector) ablated one at a time: each "
                                "set leaves one out, the rest in equal shares; the whole pool "
                                "is the baseline", type=str, list=True)


@dataclass(frozen=True)
class AnalysisSection:
    law: str = spec("power", "law the summary leads with: L = A*D^-k, L = E + A*D^-k or "
                    "L = E + A*(D + D0)^-k (saturating: flat below D0); all three are fitted",
                    type=str, choices=LAWS)
    bootstrap: int = spec(200, "bootstrap resamples per fit for standard errors and 95% "
                          "intervals (0: none)", type=int, min=0)
    seed: int = spec(0, "seed of the bootstrap resampling", type=int)
    easy_top1: float = spec(0.9, "per class: 'easy' when its top-1 at the smallest size is at "
                            "least this", type=float, min=0.0, max=1.0)
    scaling_k: float = spec(0.3, "per class: 'scaling' (when not easy) when its loss falls with "
                            "size at least this fast (power-law k); 'poor' otherwise", type=float,
                            min=0.0)


@dataclass(frozen=True)
class BackendSection:
    name: str = spec("local", "where stages run (the command line's --backend overrides)",
                     type=str, choices=BACKENDS)
    workers: int = spec(2, "local: stages run at once, each in its own process", type=int, min=1)
    profile: str = spec("local", "slurm: site profile synscale/profiles/<profile>.toml or a path "
                        "to one (partition, account, qos, constraint, setup lines)", type=str)


@dataclass(frozen=True)
class Resources:
    """What one stage of a kind asks Slurm for: `[resources.<kind>]`."""
    cpus: int = spec(1, "CPU cores per task", type=int, min=1, max=1024)
    mem_gb: float = spec(4.0, "memory per node, GB", type=float, min=0.1)
    gpus: int = spec(0, "GPUs per node", type=int, min=0, max=16)
    nodes: int = spec(1, "nodes per stage (training only may use several)", type=int, min=1,
                      max=1024)
    tasks_per_node: int = spec(1, "tasks per node; training runs one per GPU", type=int, min=1,
                               max=64)
    time_min: int = spec(60, "time limit, minutes", type=int, min=1)
    max_parallel: int = spec(64, "array tasks of this kind running at once (%N)", type=int,
                             min=1)
    micro_batch_size: int = spec(0, "train: most images one task computes at once on this "
                                 "cluster's GPUs (0: train.micro_batch_size); the retry after "
                                 "out of GPU memory halves it", type=int, min=0)


@dataclass(frozen=True)
class Study:
    study: StudySection
    data: DataSection
    sweep: SweepSection
    generate: GenerateSection
    prompts: PromptsSection
    model: ModelSection
    train: TrainSection
    evaluate: EvaluateSection
    curate: CurateSection
    analysis: AnalysisSection
    backend: BackendSection
    resources: dict = field(default_factory=dict)  # stage kind -> Resources
    retry: dict = field(default_factory=dict)      # stage kind -> RetryPolicy
    path: str = ""   # the file it was loaded from, for messages
    text: str = ""   # the file's text, frozen into the run directory


@dataclass(frozen=True)
class RetryPolicy:
    """How a relaunch treats a stage whose last job failed: `[retry.<kind>]`."""
    attempts: int = spec(3, "most submissions of one stage; then it is left failed", type=int,
                         min=1)
    python_exceptions: bool = spec(False, "resubmit after a Python exception (usually a bug "
                                   "that will happen again)", type=bool)
    oom_mem_factor: float = spec(2.0, "after out of memory, ask for this times more memory",
                                 type=float, min=1.0)
    max_mem_gb: float = spec(64.0, "memory cap for those increases, GB", type=float, min=0.1)
    timeout_time_factor: float = spec(2.0, "after a timeout, ask for this times more time",
                                      type=float, min=1.0)
    max_time_min: int = spec(2880, "time cap for those increases, minutes", type=int, min=1)


SECTIONS = {
    "study": StudySection, "data": DataSection, "sweep": SweepSection,
    "generate": GenerateSection, "prompts": PromptsSection, "model": ModelSection,
    "train": TrainSection, "evaluate": EvaluateSection, "curate": CurateSection,
    "analysis": AnalysisSection,
    "backend": BackendSection,
}
# Tables of tables: [resources.<kind>] for each stage kind.
RESOURCE_KINDS = KINDS
