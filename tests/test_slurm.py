"""Integration tests on the real single-machine Slurm (slurm/local-cluster.sh),
with and without accounting."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_module
from synscale.plan import state

pytestmark = pytest.mark.slow
CLUSTER = ROOT / "slurm" / "local-cluster.sh"


def cluster(mode: str) -> None:
    if os.geteuid() != 0 and shutil.which("sbatch") is None:
        pytest.skip("the local Slurm needs root to install and start (slurm/local-cluster.sh)")
    args = ["bash", str(CLUSTER), "start"] + (["--no-accounting"] if mode == "off" else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def status(run_dir) -> dict:
    r = run_module("synscale.status", run_dir, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_until(run_dir, done: int, timeout=900) -> dict:
    deadline = time.time() + timeout
    while True:
        info = status(run_dir)
        finished = sum(k["done"] for k in info["kinds"].values())
        failed = sum(k["failed"] for k in info["kinds"].values())
        if finished >= done or failed:
            return info
        assert time.time() < deadline, f"timed out: {info}"
        time.sleep(2)


def test_embedded_study_on_slurm_matches_local_and_splits_arrays(small_study, tmp_path):
    cluster("on")
    replace = {"real_images_per_class = [4, 8, 16]": "real_images_per_class = [4, 8, 16, 32]",
               "width = [16]": "width = [16, 24]\nheads = 2"}
    local = small_study("same", workers=2, **replace)
    r = run_module("synscale.launch", local, "--root", tmp_path / "local", "--json")
    assert r.returncode == 0, r.stderr[-2000:]

    slurm_root = tmp_path / "slurm"
    r = run_module("synscale.launch", local, "--root", slurm_root, "--backend", "slurm", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    sub = json.loads(r.stdout)
    total = sum(sub["stages"].values())
    assert sub["submitted"] == total == 2 + 2 + 14 + 14
    # 14 train stages > MaxArraySize 11: two train arrays, each indexed from 0
    arrays = sub["arrays"]
    assert [a["kind"] for a in arrays].count("train") == 2
    assert all(a["tasks"] <= 11 for a in arrays)
    ids = {a["job_id"]: a["kind"] for a in arrays}
    for a in arrays:
        wanted = {"generate": set(), "pack": {"generate"}, "train": {"pack"},
                  "evaluate": {"train"}}[a["kind"]]
        assert {ids[d] for d in a["dependency"]} == wanted

    # a relaunch while everything is queued submits nothing twice
    again = json.loads(run_module("synscale.launch", local, "--root", slurm_root,
                                  "--backend", "slurm", "--json").stdout)
    assert again["submitted"] == 0 and again["skipped_queued"] + again["skipped_done"] == total

    info = wait_until(slurm_root / "same", total)
    assert not info["failures"], info["failures"]
    # same stage ids, same metrics: the backend changes where, not what
    for metrics in (tmp_path / "local/same/stages/evaluate").glob("*/metrics.json"):
        other = slurm_root / "same/stages/evaluate" / metrics.parent.name / "metrics.json"
        a, b = state.read_json(metrics), state.read_json(other)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["top1"] == pytest.approx(a["top1"], abs=1e-9)


def _fake_run(tmp_path, jobs: dict) -> "Path":
    """A run directory whose stages are plain sbatch jobs: status reads it as
    it reads a study's, so each failure class can be produced on purpose."""
    from synscale.plan.graph import Plan, Stage
    run = tmp_path / "fake"
    stages = [Stage(name, "train", {}) for name in jobs]
    (run / "slurm").mkdir(parents=True)
    state.write_text(run / "plan.json", Plan("fake", stages).to_json())
    records = {"stages": {}, "arrays": []}
    for name, (args, wrap) in jobs.items():
        folder = run / "stages/train" / name
        folder.mkdir(parents=True)
        r = subprocess.run(["sbatch", "--parsable", "-o", str(folder / "log.txt"), *args,
                            "--wrap", wrap.format(folder=folder)],
                           capture_output=True, text=True, check=True)
        job = r.stdout.strip().split(";")[0]
        records["stages"][name] = job
        records["arrays"].append({"job_id": job, "kind": "train", "tasks": 1, "dependency": []})
    state.write_json(run / "slurm/submissions.json", records)
    return run


@pytest.mark.parametrize("mode", ["on", "off"])
def test_status_classifies_done_failed_and_cancelled(tmp_path, mode):
    cluster(mode)
    py_error = ('python -c "import json; json.dump({{\'error\': \'ValueError: bad\', '
                '\'traceback\': \'\'}}, open(\'{folder}/error.json\', \'w\'))"; exit 1')
    run = _fake_run(tmp_path, {
        "ok": ([], "echo '{{}}' > {folder}/DONE"),
        "exc": ([], py_error),
        # the worker's own SIGTERM record, for status without accounting
        "cancel": ([], f"PYTHONPATH={ROOT} {sys.executable} -c 'import time, pathlib; "
                       "from synscale.backends.worker import _record_termination; "
                       "_record_termination(pathlib.Path(\"{folder}\")); time.sleep(300)'"),
        "queued": (["--begin=now+3600"], "true"),
    })
    deadline = time.time() + 120
    while status(run)["kinds"]["train"]["running"] < 1 and time.time() < deadline:
        time.sleep(1)
    jobs = state.read_json(run / "slurm/submissions.json")["stages"]
    subprocess.run(["scancel", jobs["cancel"]], check=True)
    while True:
        info = status(run)
        if info["kinds"]["train"]["done"] == 1 and info["kinds"]["train"]["failed"] == 2:
            break
        assert time.time() < deadline, info
        time.sleep(1)
    assert info["kinds"]["train"]["pending"] == 1  # the job held until an hour from now
    classes = {f["id"]: f["class"] for f in info["failures"]}
    assert classes["exc"] == "python exception"
    assert classes["cancel"] == "cancelled"  # without accounting: from the exit record
    subprocess.run(["scancel", jobs["queued"]])


def test_training_on_two_nodes_through_srun(small_study, tmp_path):
    cluster("on")
    study = small_study("twonodes", **{
        'sources = ["real", "synthetic"]': 'sources = ["real"]',
        "[backend]": "[resources.train]\nnodes = 2\ntasks_per_node = 1\n\n[backend]"})
    r = run_module("synscale.launch", study, "--root", tmp_path, "--backend", "slurm", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    info = wait_until(tmp_path / "twonodes", 1 + 3 + 3)
    assert not info["failures"], info["failures"]
    for manifest in (tmp_path / "twonodes/stages/train").glob("*/manifest.json"):
        m = state.read_json(manifest)
        assert m["world_size"] == 2 and m["micro_batch_size"] == 16
        assert [x["rank"] for x in m["ranks"]] == [0, 1]
        assert {x["node"] for x in m["ranks"]} == {"node1", "node2"}
        assert m["master_addr"] == "node1"
        assert (manifest.parent / "model.safetensors").exists()
    metrics = [state.read_json(p) for p in (tmp_path / "twonodes").glob("stages/evaluate/*/metrics.json")]
    assert len(metrics) == 3 and all(0 < m["loss"] < 10 for m in metrics)
    # every task exited cleanly too (an abort at exit would fail the array's dependents)
    from synscale.backends.slurm import accounting_states
    jobs = state.read_json(tmp_path / "twonodes/slurm/submissions.json")
    acct = accounting_states([a["job_id"] for a in jobs["arrays"] if a["kind"] == "train"])
    assert acct and set(acct.values()) == {"COMPLETED"}, acct


def test_cancelled_task_alone_runs_again(small_study, tmp_path):
    cluster("on")
    study = small_study("cancel", **{'sources = ["real", "synthetic"]': 'sources = ["real"]',
                                     "max_steps = 40": "max_steps = 400",
                                     "min_steps = 20": "min_steps = 400"})
    launch = ["synscale.launch", study, "--root", tmp_path, "--backend", "slurm", "--json"]
    assert run_module(*launch).returncode == 0
    run = tmp_path / "cancel"
    jobs = state.read_json(run / "slurm/submissions.json")["stages"]
    deadline = time.time() + 600
    while True:  # wait for a training task to be running, then cancel it
        info = status(run)
        if info["kinds"]["train"]["running"]:
            break
        assert time.time() < deadline, info
        time.sleep(1)
    from synscale.backends.slurm import queue_states
    from synscale.plan.graph import Plan
    plan = Plan.from_json((run / "plan.json").read_text())
    queue = queue_states()
    victim_stage, victim = next((s.id, jobs[s.id]) for s in plan.of_kind("train")
                                if queue.get(jobs[s.id]) == "RUNNING")
    subprocess.run(["scancel", victim], check=True)
    # Let the other trainings finish. The evaluation array waits on the whole
    # training array (afterok), so none of it can start now.
    while True:
        info = status(run)
        if info["kinds"]["train"]["done"] == 2 and info["kinds"]["train"]["failed"] == 1:
            break
        assert time.time() < deadline, info
        time.sleep(2)
    before = {p.parent.name: p.read_text() for p in run.glob("stages/*/*/DONE")}
    again = json.loads(run_module(*launch).stdout)
    # the cancelled training and the evaluations that never ran; nothing finished
    assert again["submitted"] == 1 + 3 and again["skipped_done"] == 1 + 2
    resubmitted = state.read_json(run / "slurm/submissions.json")["stages"]
    assert resubmitted[victim_stage] != victim
    info = wait_until(run, 7)
    assert not info["failures"], info["failures"]
    after = {p.parent.name: p.read_text() for p in run.glob("stages/*/*/DONE")}
    assert all(after[k] == v for k, v in before.items())


def test_python_exception_is_not_resubmitted_unless_asked(small_study, tmp_path):
    from dataclasses import replace

    from synscale.backends.profile import load_profile
    from synscale.backends.slurm import submit_plan
    from synscale.plan.graph import Plan, Stage
    from synscale.plan.layout import RunDir
    from synscale.study.load import load_study

    cluster("on")
    study = load_study(small_study("broken"))
    profile, problems = load_profile("local", study.path)
    assert not problems
    # A training stage with an empty spec: the real runner raises at once.
    plan = Plan("broken", [Stage("bad0", "train", {})])
    run = RunDir(tmp_path / "broken")
    state.write_text(run.plan_file, plan.to_json())
    first = submit_plan(plan, run, study, profile)
    assert first.submitted == ["bad0"]
    deadline = time.time() + 300
    while (info := status(run.root))["kinds"]["train"]["failed"] == 0:
        assert time.time() < deadline, info
        time.sleep(1)
    assert info["failures"][0]["class"] == "python exception"

    again = submit_plan(plan, run, study, profile)
    assert again.submitted == [] and "python exception" in again.not_retried["bad0"]
    asked = replace(study, retry={**study.retry,
                                  "train": replace(study.retry["train"], python_exceptions=True)})
    third = submit_plan(plan, run, asked, profile)
    assert third.submitted == ["bad0"]
    records = state.read_json(run.root / "slurm/submissions.json")
    assert records["attempts"]["bad0"] == 2


def test_preempted_training_checkpoints_requeues_and_matches_an_uninterrupted_run(small_study,
                                                                                 tmp_path):
    cluster("on")
    study = small_study("preempt", **{
        'sources = ["real", "synthetic"]': 'sources = ["real"]',
        "real_images_per_class = [4, 8, 16]": "real_images_per_class = [16]",
        "min_steps = 20": "min_steps = 300\nlog_every = 10\ncheckpoint_every = 100000",
        "max_steps = 40": "max_steps = 300"})
    assert run_module("synscale.launch", study, "--root", tmp_path / "local").returncode == 0
    r = run_module("synscale.launch", study, "--root", tmp_path / "slurm", "--backend", "slurm",
                   "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "slurm/preempt"
    from synscale.plan.graph import Plan
    (train,) = Plan.from_json((run / "plan.json").read_text()).of_kind("train")
    job = state.read_json(run / "slurm/submissions.json")["stages"][train.id]
    log = run / "stages/train" / train.id / "log.txt"
    deadline = time.time() + 600
    while not (log.exists() and "step 50/" in log.read_text()):
        assert time.time() < deadline and not (log.parent / "DONE").exists()
        time.sleep(0.2)
    # what Slurm sends before a preemption or the time limit (submitit's signal)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    info = wait_until(run, 3, timeout=600)
    assert not info["failures"], info["failures"]
    manifest = state.read_json(run / "stages/train" / train.id / "manifest.json")
    assert len(manifest["resumed_at_steps"]) == 1 and 50 <= manifest["resumed_at_steps"][0] < 300
    local = state.read_json(tmp_path / "local/preempt/stages/train" / train.id / "manifest.json")
    assert local["resumed_at_steps"] == []
    # the same steps, in the same data order, from the same state: the same losses
    assert [s for s, _ in manifest["loss_curve"]] == [s for s, _ in local["loss_curve"]]
    for (_, a), (_, b) in zip(manifest["loss_curve"], local["loss_curve"]):
        assert a == pytest.approx(b, abs=1e-4)


def test_cancel_stops_only_this_runs_live_jobs(tmp_path):
    cluster("on")
    other = subprocess.run(["sbatch", "--parsable", "--begin=now+3600", "--wrap", "true"],
                           capture_output=True, text=True, check=True).stdout.strip()
    run = _fake_run(tmp_path, {"a": (["--begin=now+3600"], "true"), "b": ([], "sleep 300"),
                               "c": ([], "echo '{{}}' > {folder}/DONE")})
    jobs = state.read_json(run / "slurm/submissions.json")["stages"]
    deadline = time.time() + 60
    while status(run)["kinds"]["train"]["done"] < 1:
        assert time.time() < deadline
        time.sleep(0.5)
    r = run_module("synscale.cancel", run, "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["cancelled"]) == sorted([jobs["a"], jobs["b"]])
    from synscale.backends.slurm import queue_states
    queue = queue_states()
    assert jobs["a"] not in queue and other in queue  # another run's job is left alone
    subprocess.run(["scancel", other])
