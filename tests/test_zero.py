"""Checkpoints through DeepSpeed on two ranks (gloo, two local processes), under
ZeRO 0-3: a training killed with SIGKILL, then preempted with USR2, resumes
each time and ends with the losses of an uninterrupted one; ZeRO-3's final
weights are whole and score far above chance.

A process start costs ~25 s of CPU here (imports, FFCV's numba compilation),
so each pair of processes runs several stages in a row, as a local worker
does: the uninterrupted trainings and the first interrupted one share a
launch, and each later launch resumes one ZeRO stage's training (a new
process after SIGKILL), preempts it with USR2, lets it finish (the "requeue"
is a retry in the same process), then starts the next stage's and is killed
in it."""
import signal
import time
from types import SimpleNamespace

import pytest

from conftest import SMALL_STUDY
from ranks import at_step, finish, start, wait_for
from synscale.plan import state

pytestmark = pytest.mark.slow

STEPS, CHECKPOINT_EVERY = 150, 50


def study_file(folder, zero: int):
    """The embedded study reduced to one real training of 150 steps; every
    ZeRO stage gets its own training, all read one pack."""
    text = SMALL_STUDY.format(name="zero", workers=1)
    for old, new in {'sources = ["real", "synthetic"]': 'sources = ["real"]',
                     "real_images_per_class = [4, 8, 16]": "real_images_per_class = [16]",
                     "min_steps = 20": f"min_steps = {STEPS}\nlog_every = 10\n"
                                       f"checkpoint_every = {CHECKPOINT_EVERY}\nzero_stage = {zero}",
                     "max_steps = 40": f"max_steps = {STEPS}\nlr = 0.004",
                     # a model that learns the digits in 150 steps (top-1 ~0.5)
                     "width = [16]": "width = [32]\nheads = 2",
                     "depth = 1": "depth = 2"}.items():
        assert old in text
        text = text.replace(old, new)
    path = folder / f"zero{zero}.toml"
    path.write_text(text)
    return path


ZEROS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One launch: the pack, the uninterrupted training of every ZeRO stage
    and ZeRO-3's evaluation (under whole/), then ZeRO-0's training again
    under cut/, killed (SIGKILL) past its checkpoint at step 50."""
    from synscale.study.expand import expand
    from synscale.study.load import load_study

    folder = tmp_path_factory.mktemp("zero")
    r = SimpleNamespace(folder=folder, whole=folder / "whole", cut=folder / "cut")
    r.study = {z: study_file(folder, z) for z in ZEROS}
    plans = {z: expand(load_study(r.study[z])) for z in ZEROS}
    r.train = {z: plans[z].of_kind("train")[0] for z in ZEROS}
    (pack,) = plans[0].of_kind("pack")
    r.evaluation = next(s for s in plans[3].of_kind("evaluate") if s.inputs == (r.train[3].id,))
    r.log = lambda z: r.cut / "stages/train" / r.train[z].id / "log.txt"
    # the cut run reads the same pack: a link to it (inputs are only read)
    (r.cut / "stages/pack").mkdir(parents=True)
    (r.cut / "stages/pack" / pack.id).symlink_to(r.whole / "stages/pack" / pack.id)
    began = time.time()
    procs = start([(r.whole, r.study[0], pack.id)]
                  + [(r.whole, r.study[z], r.train[z].id) for z in ZEROS]
                  + [(r.whole, r.study[3], r.evaluation.id), (r.cut, r.study[0], r.train[0].id)],
                  attempt="whole", folder=folder)
    wait_for(at_step(r.log(0), 60), procs, timeout=600)
    for p in procs:
        p.kill()
    finish(procs)
    r.timings = {"uninterrupted launch (pack, 4 trainings, evaluation)": time.time() - began}
    for z in ZEROS:
        assert state.is_done(r.whole / "stages/train" / r.train[z].id), z
    return r


def test_zero_stages_resume_exactly_after_sigkill_and_usr2(runs):
    r = runs
    for z in ZEROS:
        began = time.time()
        stage = r.cut / "stages/train" / r.train[z].id
        checkpoints = stage / "checkpoints"
        # killed past step 60: the save at 50 is complete, nothing later began
        saved = sorted(p.parent.name for p in checkpoints.glob("step*/COMPLETE"))
        assert saved == ["step000000050"], (z, saved)
        sizes = {p.name: p.stat().st_size for p in (checkpoints / saved[0]).iterdir()}
        print(f"ZeRO-{z} checkpoint, bytes per file: {sizes}")
        _exports_with_deepspeeds_tools(checkpoints, z, r.whole / "stages/train" / r.train[z].id)
        # a newer save that a kill cut short: never loaded
        torn = checkpoints / "step000000075"
        torn.mkdir()
        (torn / "mp_rank_00_model_states.pt").write_bytes(b"torn")

        nxt = [(r.cut, r.study[z + 1], r.train[z + 1].id)] if z + 1 in ZEROS else []
        procs = start([(r.cut, r.study[z], r.train[z].id)] + nxt, mode="submitit",
                      attempt=f"cut{z}", folder=r.folder)
        wait_for(at_step(r.log(z), 110), procs)
        # USR2 to rank 1 only: whichever rank gets it, all save and rank 0 requeues
        procs[1].send_signal(signal.SIGUSR2)
        wait_for(lambda stage=stage: state.is_done(stage), procs)
        if nxt:
            wait_for(at_step(r.log(z + 1), 60), procs)
            for p in procs:
                p.kill()
            finish(procs)
        else:
            codes, outs = finish(procs)
            assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
        # the save held new work, and submitit's checkpoint() did not save again
        assert (r.cut / f"requeued-{r.train[z].id}").read_text() == "True"
        text = r.log(z).read_text()
        assert "preempted at step" in text and "exiting to be requeued" in text
        resumed = state.read_json(stage / "manifest.json")
        whole = state.read_json(r.whole / "stages/train" / r.train[z].id / "manifest.json")
        assert whole["resumed_at_steps"] == []
        first, preempted_at = resumed["resumed_at_steps"]
        assert first == 50 and 110 <= preempted_at < STEPS, resumed["resumed_at_steps"]
        assert [s for s, _ in resumed["loss_curve"]] == [s for s, _ in whole["loss_curve"]]
        for (_, a), (_, b) in zip(resumed["loss_curve"], whole["loss_curve"]):
            assert a == pytest.approx(b, abs=1e-4), (z, resumed["loss_curve"], whole["loss_curve"])
        # TensorBoard's own reader sees one curve, the manifest's: the points the
        # killed attempt wrote past its checkpoint are purged, none is missing
        board = _tensorboard_losses(stage)
        assert [s for s, _ in board] == [s for s, _ in resumed["loss_curve"]], (z, board)
        for (_, a), (_, b) in zip(board, resumed["loss_curve"]):
            assert a == pytest.approx(b, abs=1e-4), z
        assert not checkpoints.exists()  # the final weights supersede them
        r.timings[f"ZeRO-{z}: resume, preempt, finish (+ next one's start)"] = time.time() - began
    print({k: round(v, 1) for k, v in r.timings.items()})


def _tensorboard_losses(stage) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    board = EventAccumulator(str(stage / "tensorboard"))
    board.Reload()
    return [(e.step, e.value) for e in board.Scalars("train/loss")]


def _exports_with_deepspeeds_tools(checkpoints, zero: int, finished) -> None:
    """README, "Taking models away": DeepSpeed's zero_to_fp32.py, which it
    copies beside the checkpoints, reads them through `latest` under ZeRO
    1-3; a ZeRO-0 checkpoint is the module itself. Either way the weights
    have the final model's names and shapes."""
    import shutil
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    assert (checkpoints / "latest").read_text() == "step000000050"
    if zero == 0:
        weights = torch.load(checkpoints / "step000000050/mp_rank_00_model_states.pt",
                             map_location="cpu", weights_only=False)["module"]
    else:
        out = checkpoints.parent / "exported"
        r = subprocess.run([sys.executable, str(checkpoints / "zero_to_fp32.py"), str(checkpoints),
                            str(out), "--safe_serialization"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        weights = load_file(str(out / "model.safetensors"))
        shutil.rmtree(out)
    final = load_file(str(finished / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in weights.items()} == \
        {k: tuple(v.shape) for k, v in final.items()}, zero


def test_zero3_weights_are_whole_and_score_far_above_chance(runs):
    from safetensors.torch import load_file

    r = runs
    weights, full = (load_file(r.whole / "stages/train" / r.train[z].id / "model.safetensors")
                     for z in (3, 0))
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in full.items()}
    assert all(v.dtype == full[k].dtype and v.numel() for k, v in weights.items())
    # the same training, partitioned or not: the same weights, up to the
    # order of floating-point sums (measured: 0.3-0.6% of the weights' norm;
    # a partition left at its init would be tens of percent)
    drift = (sum(((weights[k] - full[k]) ** 2).sum() for k in full) ** 0.5
             / sum((full[k] ** 2).sum() for k in full) ** 0.5).item()
    metrics = state.read_json(r.whole / "stages/evaluate" / r.evaluation.id / "metrics.json")
    print(f"ZeRO-3 weights: {len(weights)} tensors, {sum(v.numel() for v in weights.values())} "
          f"values, differing from ZeRO-0's by {drift:.2%} of their norm; "
          f"evaluation: top1 {metrics['top1']:.3f}, loss {metrics['loss']:.3f}")
    assert drift < 0.02
    assert metrics["top1"] > 0.4, metrics  # ten classes: chance is 0.1
