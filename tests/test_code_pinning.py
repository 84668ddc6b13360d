"""Code pinned at submission (backends/code.py): the snapshot, the map from
changed files to stage kinds, and a queued Slurm job that runs the code it
was submitted with although the checkout changed meanwhile."""
import json
import os
import shutil
import subprocess
import sys
import types

import pytest

from conftest import ROOT
from synscale.backends import code
from synscale.plan import state


def checkout_copy(where):
    """A checkout of its own: the repository's package, without bytecode."""
    shutil.copytree(ROOT / "synscale", where / "synscale",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return where / "synscale"


def test_snapshot_is_content_addressed_and_skips_bytecode(tmp_path):
    package = checkout_copy(tmp_path / "src")
    first = code.snapshot(tmp_path / "run", package)
    folder = tmp_path / "run" / "code" / first.hash
    assert first.folder == str(folder) and first.pinned and len(first.hash) == 16
    assert (folder / "synscale/stages/train.py").read_bytes() == \
        (package / "stages/train.py").read_bytes()
    assert (folder / "synscale/prompts/data/clip_templates_7.txt").exists()  # package data
    # bytecode is neither copied nor hashed
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__/launch.cpython-311.pyc").write_bytes(b"\0")
    again = code.snapshot(tmp_path / "run", package)
    assert again.hash == first.hash and not list(folder.rglob("__pycache__"))
    # an edit is a new folder beside the old one, which stays as it was
    (package / "stages/train.py").write_text((package / "stages/train.py").read_text() + "\n# x\n")
    edited = code.snapshot(tmp_path / "run", package)
    assert edited.hash != first.hash and (tmp_path / "run/code" / edited.hash).is_dir()
    assert not (folder / "synscale/stages/train.py").read_text().endswith("# x\n")
    assert {p.name for p in (tmp_path / "run/code").iterdir()} == {first.hash, edited.hash}
    assert [f for f in edited.files if edited.files[f] != first.files[f]] == \
        ["synscale/stages/train.py"]
    meta = json.loads((folder / "code.json").read_text())
    assert meta["source"] == str(package) and meta["hash"] == first.hash
    # not a git checkout: said so, not a failure
    assert meta["commit"] is None and meta["dirty"] is None and "no git commit" in meta["git"]


def test_git_commit_and_dirty_are_recorded_and_git_may_be_absent(tmp_path, monkeypatch):
    package = checkout_copy(tmp_path / "src")
    git = ["git", "-C", str(package.parent), "-c", "user.name=t", "-c", "user.email=t@t"]
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "synscale"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    clean = code.snapshot(tmp_path / "run", package)
    assert clean.commit == head.strip() and clean.dirty is False and clean.git == ""
    (package / "status.py").write_text("# edited\n")
    assert code.snapshot(tmp_path / "run", package).dirty is True
    (package / "status.py").write_text("# edited again\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git on it
    gone = code.snapshot(tmp_path / "run", package)
    assert gone.commit is None and gone.dirty is None and gone.git == "git is not installed"


def test_running_reads_the_copy_it_was_imported_from(tmp_path):
    pinned = code.snapshot(tmp_path / "run", checkout_copy(tmp_path / "src"))
    out = subprocess.run([sys.executable, "-c", "import json, synscale.backends.code as c; "
                          "print(json.dumps(c.running()))"], cwd=pinned.folder,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == pinned.record()
    # the checkout itself (the local backend): hashed, not copied
    here = code.running()
    assert here["pinned"] is False and here["folder"] == str(ROOT)
    assert here["hash"] == code.identify(ROOT / "synscale").hash


def test_done_records_the_code_that_computed_the_stage(tmp_path, monkeypatch):
    """What the local backend runs (worker.execute in its own processes)."""
    from synscale.plan.graph import Stage
    from synscale.runtime import harness as worker

    monkeypatch.setattr(worker, "runner", lambda kind: types.SimpleNamespace(run=lambda ctx: {}))
    worker.execute(str(tmp_path), Stage("s1", "train", {}), {})
    done = state.read_json(tmp_path / "stages/train/s1/DONE")
    assert done["code"] == code.running() and done["code"]["folder"] == str(ROOT)


def test_changed_files_map_to_the_stage_kinds_that_run_them(tmp_path):
    package = checkout_copy(tmp_path / "src")
    run = tmp_path / "run"
    old = code.snapshot(run, package)
    kind_of = {"g": "generate", "p": "pack", "t1": "train", "t2": "train", "e": "evaluate"}
    code.remember(run, old, list(kind_of))

    def edit(rel):
        """The change report for `rel` edited alone (then put back)."""
        path = package / rel
        before = path.read_bytes()
        path.write_bytes(before + b"\n# edited\n")
        try:
            return code.changes(run, code.snapshot(run, package), kind_of, queued=["t1", "e"],
                                done=["g", "p", "t2"])
        finally:
            path.write_bytes(before)

    # a runner: only its kind
    change = edit("stages/train.py")
    assert change["changed_files"] == ["synscale/stages/train.py"]
    assert change["kinds"] == {"train": {"queued": 1, "done": 1,
                                         "files": ["synscale/stages/train.py"]}}
    assert code.message(change) == (
        "code changed since the last launch (synscale/stages/train.py): 1 queued train stages "
        "keep the code they were submitted with; 1 done train stages were computed with the "
        "old code (their ids are unchanged; bump the runner VERSION to recompute them).")
    # a module two runners import inside their functions
    assert set(edit("models/vit.py")["kinds"]) == {"train", "evaluate"}
    # package data goes with the package that reads it
    prompts = edit("prompts/data/clip_templates_7.txt")["kinds"]
    assert "train" not in prompts and {"generate", "evaluate"} <= set(prompts)
    # what the worker runs, every stage runs
    assert set(edit("plan/state.py")["kinds"]) == set(kind_of.values())
    # a module no stage imports: listed, and said to touch none
    only_status = edit("status.py")
    assert only_status["changed_files"] == ["synscale/status.py"] and not only_status["kinds"]
    assert "no recorded stage runs these files" in code.message(only_status)
    # put back, the checkout is the old snapshot again
    assert code.snapshot(run, package).hash == old.hash
    # stages submitted with the new code: nothing differs for them
    (package / "status.py").write_text("# edited\n")
    new = code.snapshot(run, package)
    code.remember(run, new, list(kind_of))
    assert code.message(code.changes(run, new, kind_of, ["t1"], ["t2"])) is None


def test_after_submission_reports_and_records(tmp_path):
    package = checkout_copy(tmp_path / "src")
    run = tmp_path / "run"
    old = code.snapshot(run, package)
    sub = types.SimpleNamespace(submitted=["t1"], skipped_live=[], skipped_done=[])
    first = code.after_submission(run, old, {"t1": "train"}, sub)
    assert first["message"] is None and first["hash"] == old.hash
    assert state.read_json(code.stages_file(run)) == {"t1": old.hash}
    (package / "stages/train.py").write_text("VERSION = '1'\n")
    new = code.snapshot(run, package)
    queued = types.SimpleNamespace(submitted=[], skipped_live=["t1"], skipped_done=[])
    second = code.after_submission(run, new, {"t1": "train"}, queued)
    assert second["kinds"]["train"]["queued"] == 1 and "1 queued train" in second["message"]


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_queued_stage_runs_the_code_it_was_submitted_with(small_study, tmp_path):
    """Launch from a checkout of its own, hold the trainings, edit the
    checkout's training runner to leave a mark, relaunch, release: the
    trainings ran the copy made at submission, and the relaunch said so."""
    from test_slurm import cluster, wait_until

    cluster("on")
    checkout = checkout_copy(tmp_path / "checkout").parent
    marks = tmp_path / "marks"
    marks.mkdir()
    study = small_study("pinned", **{'sources = ["real", "synthetic"]': 'sources = ["real"]'})
    root = tmp_path / "runs"

    def launch(*extra):
        # from the checkout, as a user runs it there: it alone is on the path
        env = {**os.environ, "PYTHONPATH": str(checkout), "COLUMNS": "160"}
        r = subprocess.run([sys.executable, "-m", "synscale.launch", str(study), "--root",
                            str(root), "--backend", "slurm", *extra], cwd=checkout, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r

    first = json.loads(launch("--json").stdout)
    jobs = [a["job_id"] for a in first["arrays"]] + [first.get("analysis_job") or ""]
    try:
        trains = [a["job_id"] for a in first["arrays"] if a["kind"] == "train"]
        # they wait on the pack job, which has not finished importing torch yet
        subprocess.run(["scontrol", "hold", *trains], check=True)
        pinned = first["code"]
        copy = root.resolve() / "pinned" / "code" / pinned["hash"]
        assert pinned["folder"] == str(copy) and pinned["pinned"]
        assert json.loads((copy / "code.json").read_text())["source"] == \
            str(checkout / "synscale")
        runner = checkout / "synscale/stages/train.py"
        text = runner.read_text()
        assert text.count("\ndef run(ctx) -> dict:\n") == 1
        runner.write_text(text.replace(
            "\ndef run(ctx) -> dict:\n", "\ndef run(ctx) -> dict:\n"
            f"    __import__('pathlib').Path({str(marks)!r}, 'edited-train-ran').touch()\n"))

        said = launch().stdout
        assert ("code changed since the last launch (synscale/stages/train.py): 3 queued train "
                "stages keep the code they were submitted with") in said, said
        again = json.loads(launch("--json").stdout)
        assert again["submitted"] == 0 and again["code"]["hash"] != pinned["hash"]
        assert again["code"]["changed_files"] == ["synscale/stages/train.py"]
        assert again["code"]["kinds"] == {"train": {"queued": 3, "done": 0,
                                                    "files": ["synscale/stages/train.py"]}}

        subprocess.run(["scontrol", "release", *trains], check=True)
        total = sum(first["stages"].values())
        info = wait_until(root / "pinned", total)
        assert not info["failures"], info["failures"]
    finally:
        subprocess.run(["scancel", *filter(None, jobs)])
    records = [state.read_json(p)["code"] for p in (root / "pinned").glob("stages/*/*/DONE")]
    assert len(records) == total
    # every job imported synscale from the copy (code.running reads code.json
    # beside the package it was imported from), and the edit left no mark
    expected = {k: pinned[k] for k in ("hash", "folder", "commit", "dirty", "git", "pinned")}
    assert all(r == expected for r in records), records
    assert not list(marks.iterdir())
    assert "edited-train-ran" not in (copy / "synscale/stages/train.py").read_text()
