"""Integration tests on the real single-machine Slurm (slurm/local-cluster.sh),
with and without accounting."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, at_second_shard, run_module
from synscale.plan import state
from synscale.plan.graph import Plan

# one Slurm for the whole suite: these run one after another in one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]
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


def finished_with_results(run, total: int) -> dict:
    """Wait for every stage done and results/ fitted from all the evaluations."""
    from synscale.analysis import inputs
    from synscale.plan.graph import Plan
    from synscale.plan.layout import RunDir

    info = wait_until(run, total)
    assert not info["failures"], info["failures"]
    deadline = time.time() + 300  # the analysis job runs after the last evaluation
    plan = Plan.from_json((run / "plan.json").read_text())
    evaluations = [s.id for s in plan.of_kind("evaluate")]
    while not inputs.current(RunDir(run), evaluations):
        assert time.time() < deadline, "the analysis job wrote no current results"
        time.sleep(1)
    rows = (run / "results/metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + len(evaluations), rows  # a header, a row per evaluation
    assert (run / "results/fits.json").exists()
    return info


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


def computed_on(run: Path, kind: str) -> list[dict]:
    """What each stage of a kind computed on. A local stage and a Slurm task here
    both take one thread (conftest's SYNSCALE_THREADS, cpus per task 1): on a CPU a
    result's last bits depend on its threads (README, "What is reproducible"), so
    only with equal ones are they bit-identical."""
    return [state.read_json(p)["computed_on"] for p in sorted(run.glob(f"stages/{kind}/*/DONE"))]


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
    ids = {a["job_id"]: a for a in arrays}
    for a in arrays:
        wanted = {"generate": set(), "pack": {"generate"}, "train": {"pack"},
                  "evaluate": {"train"}}[a["kind"]]
        assert {ids[d]["kind"] for d in a["dependency"]} == wanted
    # each evaluation array follows one training array task by task
    evaluations = [a for a in arrays if a["kind"] == "evaluate"]
    assert {a["dependency_type"] for a in evaluations} == {"aftercorr"}
    assert all(ids[a["dependency"][0]]["tasks"] == a["tasks"] for a in evaluations)
    records = state.read_json(slurm_root / "same/slurm/submissions.json")["stages"]
    plan = Plan.from_json((slurm_root / "same/plan.json").read_text())
    for s in plan.of_kind("evaluate"):
        array, task = records[s.id].split("_")
        assert records[s.inputs[0]] == f"{ids[array]['dependency'][0]}_{task}"

    # a relaunch while everything is queued submits nothing twice
    again = json.loads(run_module("synscale.launch", local, "--root", slurm_root,
                                  "--backend", "slurm", "--json").stdout)
    assert again["submitted"] == 0 and again["skipped_queued"] + again["skipped_done"] == total

    info = wait_until(slurm_root / "same", total)
    assert not info["failures"], info["failures"]
    # same stage ids, same metrics: the backend changes where, not what; with one
    # thread a stage on both (same machine), bit for bit
    for kind in ("generate", "train", "evaluate"):
        assert computed_on(tmp_path / "local/same", kind) == computed_on(slurm_root / "same", kind)
    compared = 0
    for metrics in (tmp_path / "local/same/stages/evaluate").glob("*/metrics.json"):
        other = slurm_root / "same/stages/evaluate" / metrics.parent.name / "metrics.json"
        assert state.read_json(other) == state.read_json(metrics)
        compared += 1
    assert compared == 14


def _fake_run(tmp_path, jobs: dict) -> Path:
    """A run directory whose stages are plain sbatch jobs: status reads it as
    it reads a study's, so each failure class can be produced on purpose.
    Each job's output goes where submitit puts a stage's (slurm.job_log)."""
    from synscale.backends.slurm import job_log
    from synscale.plan.graph import Plan, Stage
    from synscale.plan.layout import RunDir
    run = tmp_path / "fake"
    stages = [Stage(name, "train", {}) for name in jobs]
    (run / "slurm").mkdir(parents=True)
    state.write_text(run / "plan.json", Plan("fake", stages).to_json())
    records = {"stages": {}, "arrays": []}
    for name, (args, wrap) in jobs.items():
        folder = run / "stages/train" / name
        folder.mkdir(parents=True)
        # held until its output folder exists, which needs the job id
        r = subprocess.run(["sbatch", "--parsable", "--hold", "-o", str(run / "slurm/%j/%j_0_log.out"),
                            *args, "--wrap", wrap.format(folder=folder)],
                           capture_output=True, text=True, check=True)
        job = r.stdout.strip().split(";")[0]
        job_log(RunDir(run), job).parent.mkdir(parents=True)
        subprocess.run(["scontrol", "release", job], check=True)
        records["stages"][name] = job
        records["arrays"].append({"job_id": job, "kind": "train", "tasks": 1, "dependency": []})
    state.write_json(run / "slurm/submissions.json", records)
    return run


@pytest.mark.parametrize("mode", ["on", "off"])
def test_status_classifies_each_way_a_job_ends(tmp_path, mode):
    cluster(mode)
    py_error = ('python -c "import json; json.dump({{\'error\': \'ValueError: bad\', '
                '\'traceback\': \'\'}}, open(\'{folder}/error.json\', \'w\'))"; exit 1')
    # the worker's own SIGTERM record, which is all there is for a cancelled
    # job without accounting once its log says nothing
    term_record = (f"PYTHONPATH={ROOT} {sys.executable} -c 'import time, pathlib; "
                   "from synscale.backends.worker import _record_termination; "
                   "_record_termination(pathlib.Path(\"{folder}\")); "
                   "pathlib.Path(\"{folder}/armed\").touch(); time.sleep(300)'")
    hog = ("python3 -c 'import time\nx = []\nfor _ in range(80): "
           "x.append(bytearray(20 << 20)); time.sleep(0.1)'")
    run = _fake_run(tmp_path, {
        "ok": ([], "echo '{{}}' > {folder}/DONE"),
        "exc": ([], py_error),
        "cancel": ([], term_record),
        # slurmstepd kills it past its time limit (1 min, then KillWait 5 s)
        "late": (["--time=1"], "sleep 300"),
        # slurmstepd kills a step whose RSS passes --mem (JobAcctGatherParams=OverMemoryKill)
        "hog": (["--mem=200M"], hog),
        "queued": (["--begin=now+3600"], "true"),
    })
    jobs = state.read_json(run / "slurm/submissions.json")["stages"]
    deadline = time.time() + 240
    while not (run / "stages/train/cancel/armed").exists():
        assert time.time() < deadline, status(run)
        time.sleep(0.5)
    subprocess.run(["scancel", jobs["cancel"]], check=True)
    while True:
        info = status(run)
        if info["kinds"]["train"]["done"] == 1 and info["kinds"]["train"]["failed"] == 4:
            break
        assert time.time() < deadline, info
        time.sleep(2)
    assert info["kinds"]["train"]["pending"] == 1  # the job held until an hour from now
    assert sorted(info["kinds"]["train"]["arrays"]) == sorted(jobs.values())
    failures = {f["id"]: f for f in info["failures"]}
    assert {k: f["class"] for k, f in failures.items()} == {
        "exc": "python exception", "cancel": "cancelled", "late": "timeout",
        "hog": "out of memory"}
    assert failures["exc"]["error"] == "ValueError: bad"
    assert "memory limit" in failures["hog"]["error"]
    # each failure shows where its log is and how it ends
    assert failures["late"]["log"].endswith(f"{jobs['late']}_0_log.out")
    assert any("TIME LIMIT" in line for line in failures["late"]["tail"])
    rendered = run_module("synscale.status", run)
    assert rendered.returncode == 1 and "out of memory" in rendered.stdout
    subprocess.run(["scancel", jobs["queued"]])


# real data only, every training on two nodes with one task each
TWO_NODES = {'sources = ["real", "synthetic"]': 'sources = ["real"]',
             "[backend]": "[resources.train]\nnodes = 2\ntasks_per_node = 1\n\n[backend]"}


def run_on_slurm(study, root, stages: int) -> dict:
    """Launch on the local cluster and wait for `stages` to finish without a failure."""
    r = run_module("synscale.launch", study, "--root", root, "--backend", "slurm", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    info = wait_until(root / study.stem, stages)
    assert not info["failures"], info["failures"]
    return info


def test_training_on_two_nodes_through_srun(small_study, tmp_path):
    cluster("on")
    # ZeRO-3 across the nodes: weights, gradients and optimizer partitioned,
    # the whole weights gathered at the end (test_zero.py: every stage, locally)
    study = small_study("twonodes", **TWO_NODES,
                        **{"batch_size = 32": "batch_size = 32\nzero_stage = 3"})
    run_on_slurm(study, tmp_path, 1 + 3 + 3)
    for manifest in (tmp_path / "twonodes/stages/train").glob("*/manifest.json"):
        m = state.read_json(manifest)
        assert m["world_size"] == 2 and m["micro_batch_size"] == 16 and m["zero_stage"] == 3
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
    assert acct and {a.state for a in acct.values()} == {"COMPLETED"}, acct


def test_clip_trains_on_two_nodes_with_negatives_from_both(tmp_path):
    """Two DeepSpeed tasks (gloo) train one CLIP: each gathers the other's
    features for its contrastive loss, and the model still works zero-shot."""
    from test_clip import clip_study

    cluster("on")
    study = clip_study(tmp_path, "clip2", **TWO_NODES,
                       **{"batch_size = 32": "batch_size = 32\nzero_stage = 2"})
    run_on_slurm(study, tmp_path, 1 + 1 + 2)
    (manifest,) = (tmp_path / "clip2/stages/train").glob("*/manifest.json")
    m = state.read_json(manifest)
    assert m["objective"] == "clip" and m["world_size"] == 2 and m["micro_batch_size"] == 16
    assert m["zero_stage"] == 2
    assert {x["node"] for x in m["ranks"]} == {"node1", "node2"}
    metrics = [state.read_json(p) for p in (tmp_path / "clip2").glob("stages/evaluate/*/metrics.json")]
    assert sorted(x["zero_shot_templates"] for x in metrics) == ["clip-templates-7",
                                                                 "clip-templates-80"]
    assert all(x["top1"] > 0.3 for x in metrics), [x["top1"] for x in metrics]


def test_cancelled_task_alone_runs_again(small_study, tmp_path):
    cluster("off")  # the relaunch must tell what to resubmit without sacct
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
    plan = Plan.from_json((run / "plan.json").read_text())
    queue = queue_states()
    victim_stage, victim = next((s.id, jobs[s.id]) for s in plan.of_kind("train")
                                if jobs[s.id] in queue and queue[jobs[s.id]].state == "RUNNING")
    subprocess.run(["scancel", victim], check=True)
    # The other trainings finish, and their evaluations run as each does
    # (aftercorr): only the cancelled one's evaluation is left, blocked
    # behind its dead input (Slurm's DependencyNeverSatisfied).
    while True:
        info = status(run)
        if info["kinds"]["train"]["failed"] == 1 and info["kinds"]["evaluate"]["done"] == 2 \
                and info["kinds"]["evaluate"]["blocked"] == 1:
            break
        assert time.time() < deadline, info
        time.sleep(2)
    assert info["kinds"]["train"]["done"] == 2 and info["kinds"]["evaluate"]["pending"] == 0
    before = {p.parent.name: p.read_text() for p in run.glob("stages/*/*/DONE")}
    again = json.loads(run_module(*launch).stdout)
    # the cancelled training and its evaluation; nothing finished
    assert again["submitted"] == 2 and again["skipped_done"] == 1 + 2 + 2
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
    (train,) = Plan.from_json((run / "plan.json").read_text()).of_kind("train")
    job = state.read_json(run / "slurm/submissions.json")["stages"][train.id]
    log = run / "stages/train" / train.id / "log.txt"
    deadline = time.time() + 600
    while not (log.exists() and "step 50/" in log.read_text()):
        assert time.time() < deadline and not (log.parent / "DONE").exists()
        time.sleep(0.2)
    # what Slurm sends before a preemption or the time limit (submitit's signal)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    # Slurm holds a requeued batch job back for about two minutes (BeginTime);
    # once it is requeued, let it start at once: the wait tests nothing.
    deadline = time.time() + 300
    while True:
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                               text=True).stdout
        if "Restarts=1" in shown and "JobState=PENDING" in shown:
            # what status says meanwhile: still live, and why it was requeued
            (requeued,) = status(run)["requeued"]
            assert requeued["note"] == "requeued 1x: checkpointed at USR2", requeued
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            break
        assert time.time() < deadline and "JobState=COMPLETED" not in shown, shown[-800:]
        time.sleep(0.5)
    finished_with_results(run, 3)
    manifest = state.read_json(run / "stages/train" / train.id / "manifest.json")
    assert len(manifest["resumed_at_steps"]) == 1 and 50 <= manifest["resumed_at_steps"][0] < 300
    local = state.read_json(tmp_path / "local/preempt/stages/train" / train.id / "manifest.json")
    assert local["resumed_at_steps"] == []
    # the same steps, in the same data order, from the same state, with the same threads:
    # the same losses
    assert computed_on(run, "train") == computed_on(tmp_path / "local/preempt", "train")
    assert [s for s, _ in manifest["loss_curve"]] == [s for s, _ in local["loss_curve"]]
    for (_, a), (_, b) in zip(manifest["loss_curve"], local["loss_curve"]):
        assert a == pytest.approx(b, abs=1e-4)


def test_cancel_stops_only_this_runs_live_jobs(tmp_path):
    cluster("on")
    other = subprocess.run(["sbatch", "--parsable", "--begin=now+3600", "-o", "/dev/null", "--wrap", "true"],
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


# Loaded into the job's Python through the site profile's setup lines: the
# second shard a process commits waits there until the test kills the job.
STALL_AT_SECOND_SHARD = at_second_shard(
    'pathlib.Path(os.environ["STALL_MARKS"], str(os.getpid())).touch(); time.sleep(600)')


def test_task_killed_mid_write_leaves_nothing_taken_as_done(small_study, tmp_path):
    cluster("off")
    hook, marks = tmp_path / "hook", tmp_path / "marks"
    hook.mkdir(), marks.mkdir()
    (hook / "sitecustomize.py").write_text(STALL_AT_SECOND_SHARD)
    profile = tmp_path / "stall.toml"
    local = (ROOT / "synscale/profiles/local.toml").read_text()
    profile.write_text(local.replace('setup = [', f'setup = ["export PYTHONPATH={hook}", '
                                                  f'"export STALL_MARKS={marks}", '))
    study = small_study("midwrite", **{
        'sources = ["real", "synthetic"]': 'sources = ["synthetic"]',
        "[backend]": '[backend]\nprofile = "stall.toml"'})
    launch = ["synscale.launch", study, "--root", tmp_path, "--backend", "slurm", "--json"]
    assert run_module(*launch).returncode == 0
    run = tmp_path / "midwrite"
    generates = Plan.from_json((run / "plan.json").read_text()).of_kind("generate")
    deadline = time.time() + 300
    while len(list(marks.iterdir())) < len(generates):
        assert time.time() < deadline, status(run)
        time.sleep(0.5)
    jobs = state.read_json(run / "slurm/submissions.json")["stages"]
    subprocess.run(["scancel", "--signal=KILL", "--full", *(jobs[g.id] for g in generates)],
                   check=True)
    while (info := status(run))["kinds"]["generate"]["failed"] < len(generates):
        assert time.time() < deadline, info
        time.sleep(1)
    # a class's 16 images make one shard of two sampler batches: in the config's pool,
    # for each stage, the first batch committed whole as a part, the second only under
    # its temporary name
    pool = run / "pool" / generates[0].content_key
    for g in generates:
        assert not (run / "stages/generate" / g.id / "DONE").exists()
        assert g.spec["shard_images"] > g.spec["indices"][1] == 2 * g.spec["batch_size"]
    parts = sorted(pool.glob("*.npz"))
    assert len(parts) == len(generates) and all(p.name.startswith("part-") for p in parts)
    assert len(list(pool.glob(f".part-*.npz.*{state.TMP_SUFFIX}"))) == len(generates)
    import numpy as np
    for part in parts:
        with np.load(part) as z:
            assert len(z["offsets"]) - 1 == generates[0].spec["batch_size"]
    assert info["kinds"]["pack"]["done"] == 0  # nothing downstream took it as done

    profile.write_text(local)  # the relaunch runs without the stall
    again = json.loads(run_module(*launch).stdout)
    total = sum(again["stages"].values())
    # nothing was done: the killed generations and, behind their dead
    # dependency, everything downstream are submitted again
    assert again["submitted"] == total
    info = wait_until(run, total)
    assert not info["failures"], info["failures"]
    for g in generates:
        done = state.read_json(run / "stages/generate" / g.id / "DONE")
        # resumed at batch granularity: the committed batch was kept, not redrawn
        assert done["images_rendered"] == g.spec["indices"][1] * 5 - g.spec["batch_size"]
        assert done["shards"] == 5
    assert len(list(pool.glob("shard-*.npz"))) == 5 * len(generates)
    assert not list(pool.glob(f".*{state.TMP_SUFFIX}"))
    assert not list(pool.glob("part-*"))  # merged into their shards
