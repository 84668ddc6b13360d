"""Where stages compute (runtime/device.py): the device, DeepSpeed's
accelerator and the process-group backend chosen for each environment; the
study's device keys and their preflight rule; out of GPU memory as its own
failure class and its retry (half the micro batch); channels_last changing
nothing but float noise. GPU-only checks are marked `gpu` and skip here."""
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from conftest import ROOT, SMALL_STUDY
from synscale.backends.decide import micro_batch_of, retry_resources, with_micro_batch
from synscale.backends.failures import CLASSES, RETRIED, classify, exception_class
from synscale.backends.profile import Profile
from synscale.plan import state
from synscale.runtime import device as devices
from synscale.study.load import StudyError, load_study
from synscale.study.schema import Resources, RetryPolicy

needs_gpu = [pytest.mark.gpu,
             pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def fake_cuda(monkeypatch, count: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("count, requested, env, expected", [
    (0, "auto", {}, ("cpu", "cpu", "gloo")),
    (0, "cpu", {}, ("cpu", "cpu", "gloo")),
    (4, "cpu", {"LOCAL_RANK": "2"}, ("cpu", "cpu", "gloo")),      # told to stay on the CPU
    (4, "auto", {"LOCAL_RANK": "2"}, ("cuda:2", "cuda", "nccl")),  # one GPU per rank
    (4, "cuda", {}, ("cuda:0", "cuda", "nccl")),
    (1, "auto", {"LOCAL_RANK": "3"}, ("cuda:0", "cuda", "nccl")),  # Slurm bound one per task
    (2, "auto", {"SLURM_LOCALID": "1"}, ("cuda:1", "cuda", "nccl")),
])
def test_the_choice_for_each_environment(monkeypatch, count, requested, env, expected):
    fake_cuda(monkeypatch, count)
    choice = devices.choose(requested, env)
    assert (choice.device, choice.accelerator, choice.backend) == expected


def test_cuda_without_a_gpu_and_too_few_gpus_are_errors(monkeypatch):
    fake_cuda(monkeypatch, 0)
    with pytest.raises(devices.DeviceError, match="torch sees no GPU"):
        devices.choose("cuda", {})
    fake_cuda(monkeypatch, 2)
    with pytest.raises(devices.DeviceError, match="LOCAL_RANK = 3, but this task sees 2 GPUs"):
        devices.choose("auto", {"LOCAL_RANK": "3"})
    with pytest.raises(devices.DeviceError, match="expected one of auto, cuda, cpu"):
        devices.choose("gpu", {})


def test_select_on_cuda_sets_the_device_the_accelerator_and_tf32(monkeypatch):
    fake_cuda(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # as the Makefile once exported: not forced
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    monkeypatch.setattr(devices, "_allow_tf32", lambda: calls.append(("tf32",)))
    monkeypatch.setattr(devices, "_chosen", None)
    # deepspeed imported earlier with the CPU accelerator: it is replaced
    picked = types.SimpleNamespace(_name="cpu")
    real = types.SimpleNamespace(ds_accelerator=picked,
                                 set_accelerator=lambda a: calls.append(("accelerator", a._name)))
    cuda_mod = types.SimpleNamespace(CUDA_Accelerator=lambda: types.SimpleNamespace(_name="cuda"))
    monkeypatch.setitem(sys.modules, "deepspeed.accelerator.real_accelerator", real)
    monkeypatch.setitem(sys.modules, "deepspeed.accelerator.cuda_accelerator", cuda_mod)
    choice = devices.select("auto")
    assert choice == devices.Choice("cuda:1", "cuda", "nccl") == devices.chosen()
    assert os.environ["DS_ACCELERATOR"] == "cuda"
    assert calls == [("accelerator", "cuda"), ("set_device", "cuda:1"), ("tf32",)]


def test_select_on_the_cpu_touches_no_gpu(monkeypatch):
    fake_cuda(monkeypatch, 0)
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device on the CPU"))
    monkeypatch.setattr(devices, "_chosen", None)
    monkeypatch.delitem(sys.modules, "deepspeed.accelerator.real_accelerator", raising=False)
    assert devices.select("auto") == devices.Choice("cpu", "cpu", "gloo")
    assert os.environ["DS_ACCELERATOR"] == "cpu"


def test_to_device_leaves_cpu_tensors_as_they_are():
    x = torch.arange(6.0)
    assert devices.to_device(x, "cpu") is x


# Exactly as today on a machine without a GPU, with no DS_ACCELERATOR in the
# environment (the Makefile no longer exports one): CPU accelerator, gloo.
PROCESS_GROUP = """
import json, os
from synscale.runtime.distributed import ensure_initialized, leave_process_group
import torch.distributed as dist
world = ensure_initialized("auto")
from deepspeed.accelerator import get_accelerator
print(json.dumps({"backend": dist.get_backend(), "device": world["device"],
                  "env": os.environ["DS_ACCELERATOR"], "accelerator": get_accelerator()._name}))
leave_process_group()
"""


def test_a_cpu_machine_gets_gloo_and_the_cpu_accelerator():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; auto takes it")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DS_ACCELERATOR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID")}
    out = subprocess.run([sys.executable, "-c", PROCESS_GROUP], env={**env, "PYTHONPATH": str(ROOT)},
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "backend": "gloo", "device": "cpu", "env": "cpu", "accelerator": "cpu"}


@pytest.mark.parametrize("section, kind", [("train", "train"), ("evaluate", "evaluate"),
                                           ("generate", "generate"), ("generate", "caption")])
def test_gpus_for_a_kind_told_to_use_the_cpu_is_an_error(tmp_path, section, kind):
    text = SMALL_STUDY.format(name="gpus", workers=1)
    text = text.replace("[backend]", f"[resources.{kind}]\ngpus = 2\n\n[backend]")
    text = (text + f'\n[{section}]\ndevice = "cpu"\n') if f"[{section}]" not in text else \
        text.replace(f"[{section}]\n", f'[{section}]\ndevice = "cpu"\n')
    path = tmp_path / "gpus.toml"
    path.write_text(text)
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert e.value.problems == [
        f"{path}: {section}.device = 'cpu': resources.{kind}.gpus = 2 asks Slurm for GPUs that "
        f"{kind} stages would not use; set {section}.device = 'auto' or 'cuda', or "
        f"resources.{kind}.gpus = 0"]
    load_study_text = text.replace('device = "cpu"', 'device = "auto"')
    path.write_text(load_study_text)
    load_study(path)  # auto (or cuda) with GPUs is fine


def test_the_device_keys_travel_in_the_specs(small_study):
    from synscale.study.expand import expand
    text_path = small_study(name="dev")
    text_path.write_text(text_path.read_text().replace(
        "[train]\n", '[train]\ndevice = "cpu"\nchannels_last = true\n') +
        '\n[evaluate]\ndevice = "cuda"\n')
    plan = expand(load_study(text_path))
    train = plan.of_kind("train")[0]
    assert (train.spec["recipe"]["device"], train.spec["recipe"]["channels_last"],
            train.spec["recipe"]["compile"]) == ("cpu", True, False)
    evaluation = plan.of_kind("evaluate")[0]
    assert (evaluation.spec["device"], evaluation.spec["precision"]) == ("cuda", "fp32")


def gpu_oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_gpu_memory_is_its_own_class_by_type_also_when_wrapped(tmp_path):
    assert "out of GPU memory" in CLASSES and "out of GPU memory" in RETRIED
    assert exception_class(gpu_oom()) == "out of GPU memory"
    try:
        try:
            raise gpu_oom()
        except RuntimeError as inner:
            raise RuntimeError("DeepSpeed step failed") from inner
    except RuntimeError as e:
        wrapped = e
    assert exception_class(wrapped) == "out of GPU memory"
    try:
        try:
            raise gpu_oom()
        except RuntimeError:
            raise ValueError("while handling it")  # noqa: B904 (implicit chaining: __context__)
    except ValueError as e:
        assert exception_class(e) == "out of GPU memory"
    # host memory is not GPU memory: Slurm's "out of memory" rule is unchanged
    assert exception_class(MemoryError()) == "python exception"
    assert exception_class(RuntimeError("out of memory")) == "python exception"
    # what the harness records, and what status and the retry then read
    state.record_failure(tmp_path, wrapped, "Traceback ...", exception_class(wrapped))
    assert classify(tmp_path, None, None, None).klass == "out of GPU memory"


PROFILE = Profile(max_mem_gb=32, max_time_min=600)


def test_out_of_gpu_memory_halves_the_micro_batch_down_to_one():
    r, policy = Resources(mem_gb=8, time_min=60), RetryPolicy(attempts=10)
    seen = []
    micro = (32, 32)  # a training that ran its 32 images per task at once
    while True:
        r, why = retry_resources("out of GPU memory", 1, r, policy, PROFILE, micro)
        if r is None:
            break
        seen.append(r.micro_batch_size)
        micro = (r.micro_batch_size, 32)
    assert seen == [16, 8, 4, 2, 1] and "micro_batch_size 1, the floor" in why
    # the memory and the time asked of Slurm stay; every halving divides the task's images
    r, _ = retry_resources("out of GPU memory", 1, Resources(mem_gb=8), policy, PROFILE, (12, 12))
    assert (r.mem_gb, r.micro_batch_size) == (8, 6)
    r, _ = retry_resources("out of GPU memory", 1, Resources(), policy, PROFILE, (9, 9))
    assert r.micro_batch_size == 3
    r, why = retry_resources("out of GPU memory", 1, Resources(), policy, PROFILE, None)
    assert r is None and "outside training" in why
    r, why = retry_resources("out of GPU memory", 3, Resources(), RetryPolicy(attempts=3),
                             PROFILE, (8, 8))
    assert r is None and "retry.attempts = 3" in why
    # host out of memory: more memory, the micro batch as it was
    r, _ = retry_resources("out of memory", 1, Resources(mem_gb=8), policy, PROFILE, (8, 8))
    assert (r.mem_gb, r.micro_batch_size) == (16, 0)


def test_the_halved_micro_batch_reaches_the_training_and_keeps_its_id(small_study):
    from synscale.study.expand import expand
    plan = expand(load_study(small_study(name="micro")))
    train = plan.of_kind("train")[0]  # batch_size 32, micro_batch_size 0: 32 at once
    two_tasks = Resources(nodes=2)
    assert micro_batch_of(train, two_tasks) == (16, 16)
    assert micro_batch_of(plan.of_kind("evaluate")[0], two_tasks) is None
    assert with_micro_batch(train, two_tasks) is train
    r, _ = retry_resources("out of GPU memory", 1, two_tasks, RetryPolicy(), PROFILE,
                           micro_batch_of(train, two_tasks))
    assert micro_batch_of(train, r) == (8, 16)  # the next halving starts from the record
    runs = with_micro_batch(train, r)
    assert runs.id == train.id and runs.spec["recipe"]["micro_batch_size"] == 8
    assert train.spec["recipe"]["micro_batch_size"] == 0  # the plan's spec is not changed
    from synscale.plan.hashing import stage_id
    from synscale.stages import runner_versions
    keys = {plan.by_id[i].content_key for i in runs.inputs}
    assert stage_id("train", runs.spec, keys, runner_versions()["train"]) == train.id


def test_resources_micro_batch_size_is_for_training_and_must_divide(tmp_path):
    text = SMALL_STUDY.format(name="mb", workers=1)
    path = tmp_path / "mb.toml"
    path.write_text(text.replace("[backend]", "[resources.train]\nmicro_batch_size = 5\n\n"
                                 "[resources.evaluate]\nmicro_batch_size = 4\n\n[backend]"))
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert e.value.problems == [
        f"{path}: resources.evaluate.micro_batch_size = 4: only training has a micro batch",
        f"{path}: resources.train.micro_batch_size = 5: must divide the 32 images each task "
        "computes per step (train.batch_size / tasks)"]


class Engine:
    """What an objective's loss uses of a DeepSpeed engine: its device and module."""

    def __init__(self, module, device="cpu"):
        self.module, self.device = module, torch.device(device)

    def __call__(self, *inputs):
        return self.module(*inputs)


def classifier_curve(channels_last: bool, steps: int = 12, device: str = "cpu",
                     compile: str = "") -> list[float]:
    """The Classifier objective's losses under AdamW on fixed random digits
    (`compile`: torch.compile's backend, none when empty)."""
    from synscale.models.objectives import Classifier, prepare_model
    from synscale.study.schema import TrainSection
    from synscale.study.specs import ModelSpec, TrainSpec

    recipe = TrainSection(label_smoothing=0.1, channels_last=channels_last,
                          compile=bool(compile))
    spec = TrainSpec(ModelSpec("vit", width=16, depth=1, heads=2, patch_size=2, mlp_ratio=2.0),
                     recipe, images_per_class=0, num_classes=10, seed=0)
    torch.manual_seed(0)
    objective = Classifier(spec, (1, 8, 8), {"rank": 0}, {})
    model = prepare_model(objective.model.to(device), recipe, compile or "inductor")
    keys = list(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine, generator, out = Engine(model, device), torch.Generator().manual_seed(1), []
    images = torch.randn(16, 1, 8, 8, generator=generator)  # one batch, memorized
    labels = torch.randint(0, 10, (16,), generator=generator)
    for step in range(steps):
        loss = objective.loss(engine, images, labels, None, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    assert list(model.state_dict()) == keys  # checkpoints and weights keep their names
    return out


def test_channels_last_inputs_follow_the_model_and_change_only_noise():
    from synscale.models.objectives import model_input
    engine = Engine(torch.nn.Linear(2, 2))
    x = model_input(torch.randn(2, 3, 4, 4), engine, channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
    plain, nhwc = classifier_curve(False), classifier_curve(True)
    assert plain == pytest.approx(nhwc, rel=1e-4, abs=1e-5)
    assert plain[-1] < plain[0]  # it learns: the comparison is not of two constants


def test_compile_in_place_keeps_the_curve_and_the_weights_names():
    """torch.compile's wiring on the CPU with its eager backend (inductor
    compiles for minutes on 2 cores: that part is the gpu test below)."""
    assert classifier_curve(False, compile="eager") == pytest.approx(classifier_curve(False),
                                                                     rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mark", [pytest.param("gpu", marks=needs_gpu)])
def test_channels_last_on_the_gpu_changes_only_noise(mark):
    plain, nhwc = classifier_curve(False, device="cuda"), classifier_curve(True, device="cuda")
    assert plain == pytest.approx(nhwc, rel=1e-3, abs=1e-4)


# The train stage as a worker runs it, with no DS_ACCELERATOR set: one pack,
# then one training per study file; prints each training's manifest.
TRAININGS = """
import json, sys
import torch
torch.set_num_threads(1)
from synscale.study.load import load_study
from synscale.study.expand import expand
from synscale.runtime.harness import execute
from synscale.plan import state
root, out = sys.argv[1], {}
for path in sys.argv[2:]:
    plan = expand(load_study(path))
    for s in plan.order():
        if s.kind in ("pack", "train"):
            execute(root, s, {i: plan.by_id[i].kind for i in s.inputs})
    (train,) = plan.of_kind("train")
    out[path] = state.read_json(f"{root}/stages/train/{train.id}/manifest.json")
print(json.dumps(out))
"""


def train_variants(tmp_path, **variants) -> dict:
    """name -> the manifest of a 20-step training with these [train] lines."""
    paths = {}
    for name, lines in variants.items():
        text = SMALL_STUDY.format(name="variants", workers=1)
        for old, new in {'sources = ["real", "synthetic"]': 'sources = ["real"]',
                         "real_images_per_class = [4, 8, 16]": "real_images_per_class = [16]",
                         "min_steps = 20": f"min_steps = 20\nlog_every = 2\n{lines}",
                         "max_steps = 40": "max_steps = 20"}.items():
            text = text.replace(old, new)
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    out = subprocess.run([sys.executable, "-c", TRAININGS, str(tmp_path / "run"),
                          *map(str, paths.values())],
                         env={**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    manifests = json.loads(out.stdout.strip().splitlines()[-1])
    return {name: manifests[str(path)] for name, path in paths.items()}


def assert_same_curve(a: dict, b: dict, tolerance: float) -> None:
    steps = [s for s, _ in a["loss_curve"]]
    assert steps == [s for s, _ in b["loss_curve"]] and len(steps) == 10
    for (_, x), (_, y) in zip(a["loss_curve"], b["loss_curve"]):
        assert abs(x - y) <= tolerance * max(1.0, abs(x)), (a["loss_curve"], b["loss_curve"])


@pytest.mark.slow
def test_channels_last_trains_the_same_curve(tmp_path):
    runs = train_variants(tmp_path, plain="", nhwc="channels_last = true")
    assert runs["plain"]["device"] == runs["nhwc"]["device"] == (
        "cuda:0" if torch.cuda.is_available() else "cpu")
    assert_same_curve(runs["plain"], runs["nhwc"], 1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("mark", [pytest.param("gpu", marks=needs_gpu)])
def test_compile_trains_the_same_curve(tmp_path, mark):
    runs = train_variants(tmp_path, plain="", compiled="compile = true")
    assert_same_curve(runs["plain"], runs["compiled"], 1e-3)


@pytest.mark.parametrize("mark", [pytest.param("gpu", marks=needs_gpu)])
def test_on_a_gpu_the_choice_is_cuda_with_nccl_and_tf32(mark):
    choice = devices.select("auto")
    assert choice.cuda and choice.backend == "nccl"
    assert torch.cuda.current_device() == torch.device(choice.device).index
    x = devices.to_device(torch.ones(4), choice.device)
    assert x.device.type == "cuda"
