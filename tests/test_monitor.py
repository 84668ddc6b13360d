"""Status and relaunch read what can still change (issue 11): the done index
survives a kill at any byte, a refresh skips indexed stages' folders, counts
are the same with and without the index, a relaunch of the same plan leaves
plan.json alone, and planning faster did not change a single stage id."""
import builtins
import io
import json
import os
from pathlib import Path

import pytest

from synscale import launch, status
from synscale.plan import index, stored
from synscale.plan.graph import Plan, Stage
from synscale.plan.hashing import stage_id
from synscale.plan.index import DoneIndex, Finished
from synscale.plan.layout import RunDir
from synscale.stages import runner_versions
from synscale.study.expand import expand
from synscale.study.load import load_study

ROOT = Path(__file__).resolve().parents[1]


def fake_run(tmp_path, done=6, failed=1, pending=2) -> RunDir:
    """A run of trainings and their evaluations: `done` finished (attempt.json
    and DONE), `failed` with error.json, `pending` never started."""
    stages = []
    for i in range(done + failed + pending):
        train = Stage(f"t{i:03d}", "train", {"i": i})
        stages += [train, Stage(f"e{i:03d}", "evaluate", {"i": i}, (train.id,))]
    run = RunDir(tmp_path / "runs" / "fake")
    stored.write_plan(run, Plan("fake", stages))
    for n, s in enumerate(stages):
        folder = run.stage(s.kind, s.id)
        if n >= 2 * (done + failed):
            continue
        folder.mkdir(parents=True)
        (folder / "attempt.json").write_text(json.dumps({"pid": 1, "host": "x",
                                                         "started": 1000.0 + n}))
        if n < 2 * done:
            (folder / "DONE").write_text(json.dumps({"finished": 1010.0 + 2 * n}))
        else:
            (folder / "error.json").write_text(json.dumps({"error": "ValueError: no"}))
    return run


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_index_survives_a_torn_write_at_any_byte(tmp_path):
    path = tmp_path / "index" / "done.jsonl"
    DoneIndex(path).add({"a": Finished("train", 1.0, 2.0), "b": Finished("evaluate", None, 3.0)})
    whole = path.read_bytes()
    first_line = whole.index(b"\n") + 1
    for cut in range(len(whole)):
        path.write_bytes(whole[:cut])  # killed after `cut` bytes
        expect = {"a"} if cut >= first_line else set()
        assert set(DoneIndex(path).read()) == expect, cut
        # the next append cuts the torn line off, and every line then reads
        DoneIndex(path).add({"c": Finished("train", 4.0, 5.0)})
        assert [r["id"] for r in lines(path)] == [*sorted(expect), "c"], cut
    assert DoneIndex(path).read()["c"] == Finished("train", 4.0, 5.0)


def test_a_reader_takes_only_whole_lines_and_reads_on_from_there(tmp_path):
    path = tmp_path / "done.jsonl"
    reader = DoneIndex(path)
    assert reader.read() == {}
    DoneIndex(path).add({"a": Finished("train", 1.0, 2.0)})
    with open(path, "ab") as f:
        f.write(b'{"id":"b","kind":"train","started":1.0,"fin')  # a writer mid-line
    assert set(reader.read()) == {"a"}
    with open(path, "ab") as f:
        f.write(b'ished":2.0}\n')
    assert set(reader.read()) == {"a", "b"} and reader.offset == path.stat().st_size
    path.unlink()  # deleting the index is safe: it starts over
    assert reader.read() == {}


def test_status_counts_and_elapsed_are_the_same_with_and_without_the_index(tmp_path):
    run = fake_run(tmp_path)
    first = status.collect(run)  # reads every folder, and indexes the done stages
    assert {r["id"] for r in lines(run.done_index)} == {f"{k}{i:03d}" for k in "te"
                                                       for i in range(6)}
    second = status.collect(run)  # the done ones from the index
    assert second == first
    assert first["kinds"]["train"]["done"] == 6 and first["kinds"]["train"]["failed"] == 1
    assert first["kinds"]["train"]["pending"] == 2
    # started 1000 (t000), last train finished 1010 + 2 * 10 (t005 is stage 10)
    assert first["kinds"]["train"]["elapsed_s"] == 30.0
    # and where the index cannot be written (a run directory of someone else's)
    blocked = fake_run(tmp_path / "other")
    blocked.done_index.mkdir()  # neither readable nor writable as a file
    other = status.collect(blocked)
    assert other["kinds"] == first["kinds"]
    assert [{**f, "log": ""} for f in other["failures"]] == [{**f, "log": ""}
                                                             for f in first["failures"]]


def test_a_refresh_does_not_open_the_folders_of_indexed_stages(tmp_path, monkeypatch):
    run = fake_run(tmp_path)
    status.collect(run)
    touched = []
    real_stat, real_open = os.stat, builtins.open

    def stat(path, *a, **k):
        touched.append(str(path))
        return real_stat(path, *a, **k)

    def opened(path, *a, **k):
        touched.append(str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(builtins, "open", opened)
    monkeypatch.setattr(io, "open", opened)
    info = status.collect(run)
    indexed = [str(run.stage(k, f"{k[0]}{i:03d}")) for k in ("train", "evaluate")
               for i in range(6)]
    assert info["kinds"]["evaluate"]["done"] == 6
    assert touched and not [p for p in touched if any(p.startswith(f) for f in indexed)]
    assert any("t006" in p for p in touched)  # the failed one is looked at


def test_watch_keeps_its_state_and_reads_only_new_index_lines(tmp_path):
    run = fake_run(tmp_path)
    memory = status.Memory(run)
    status.collect(run, memory)  # indexes 12 stages
    status.collect(run, memory)  # reads those 12 lines back
    stages, offset = memory.stages, memory.index.offset
    info = status.collect(run, memory)
    assert memory.stages is stages and memory.index.offset == offset  # nothing re-read
    # a stage finishes between refreshes
    folder = run.stage("train", "t006")
    (folder / "error.json").unlink()
    (folder / "DONE").write_text(json.dumps({"finished": 2000.0}))
    after = status.collect(run, memory)
    assert after["kinds"]["train"]["done"] == info["kinds"]["train"]["done"] + 1
    assert memory.index.offset == offset  # what it appended is already in memory
    assert status.collect(run)["kinds"] == after["kinds"]


def test_status_of_a_run_directory_without_the_stage_list_reads_plan_json(tmp_path):
    run = fake_run(tmp_path)
    expected = status.collect(run)
    run.stage_list.unlink()
    assert status.collect(run) == expected


def test_launch_done_check_uses_the_index_and_a_dry_run_writes_nothing(tmp_path):
    run = fake_run(tmp_path)
    stages = [(f"{k}{i:03d}", kind) for i in range(9) for k, kind in (("t", "train"),
                                                                        ("e", "evaluate"))]
    assert index.done_ids(run, stages, record=False) == {s for s, _ in stages[:12]}
    assert not run.done_index.exists()
    assert index.done_ids(run, stages) == {s for s, _ in stages[:12]}
    assert len(lines(run.done_index)) == 12
    # indexed stages count as done without a look at their folders
    (run.stage("train", "t000") / "DONE").unlink()
    assert "t000" in index.done_ids(run, stages)
    # a fresh run directory: nothing to look at
    assert index.done_ids(RunDir(tmp_path / "none"), stages) == set()


def test_write_plan_leaves_the_same_plan_alone_and_writes_a_changed_one(small_study, tmp_path):
    study = load_study(small_study())
    run = RunDir(tmp_path / "run")
    assert stored.write_plan(run, expand(study))
    before = run.plan_file.stat().st_mtime_ns, run.plan_file.read_bytes()
    listed = run.stage_list.read_bytes()
    assert not stored.write_plan(run, expand(study))  # planned again: equal, not the same objects
    assert (run.plan_file.stat().st_mtime_ns, run.plan_file.read_bytes()) == before
    assert run.stage_list.read_bytes() == listed
    changed = expand(load_study(small_study(**{"width = [16]": "width = [16, 32]"})))
    assert stored.write_plan(run, changed)
    assert Plan.from_json(run.plan_file.read_text()).stages == changed.stages
    assert stored.load_stages(run).ids == [s.id for s in changed.stages]
    # plan.json lost or cut: written again even though the digest matches
    run.plan_file.write_text("{}")
    assert stored.write_plan(run, changed)


def test_a_no_op_relaunch_leaves_plan_json_untouched(small_study, tmp_path, monkeypatch):
    study_file = small_study()
    study = load_study(study_file)
    plan = expand(study)
    run = RunDir(tmp_path / "runs" / study.study.name)
    for s in plan.stages:  # every stage done, and results up to date
        folder = run.stage(s.kind, s.id)
        folder.mkdir(parents=True)
        (folder / "DONE").write_text(json.dumps({"finished": 1.0}))
    (run.results).mkdir(parents=True)
    (run.results / "fits.json").write_text("{}")
    import synscale.analysis.inputs as inputs
    monkeypatch.setattr(inputs, "current", lambda run, evaluations: True)
    argv = [str(study_file), "--root", str(tmp_path / "runs"), "--json", "--backend", "local"]
    assert launch.main(argv) == 0
    before = run.plan_file.stat().st_mtime_ns, run.plan_file.read_bytes()
    assert launch.main(argv) == 0
    assert (run.plan_file.stat().st_mtime_ns, run.plan_file.read_bytes()) == before
    assert len(lines(run.done_index)) == len(plan.stages)


@pytest.mark.parametrize("study", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.stem)
def test_planning_with_the_memo_gives_the_ids_of_the_plain_hash(study):
    from synscale.plan.hashing import SIZE_KEYS, content_id
    versions = runner_versions()
    plan = expand(load_study(study))
    for s in plan.stages:
        keys = {plan.by_id[i].content_key for i in s.inputs}  # what the inputs hold
        assert s.id == stage_id(s.kind, s.spec, keys, versions[s.kind]), (s.kind, s.spec)
        assert s.content_key == content_id(s.kind, s.spec, keys, versions[s.kind])
        if s.content:  # a size or a range of a content
            assert s.kind in SIZE_KEYS and s.content != s.id


def test_the_memo_writes_what_the_encoder_writes():
    shared = {"b": [1, {"a": -0.0, "log_every": 5}], "a": 0.0, "workers": 3}
    specs = [{"x": shared, "y": shared, "n": 1, "t": True, "f": 1.0, "s": "é", "none": None},
             {"x": shared, "n": True, "f": -0.0, "t": 1, "z": [shared, "1"]},
             {"x": {"b": 2}, "micro_batch_size": 4}, {}]
    memo = {}
    for spec in specs * 2:
        assert stage_id("train", spec, ("b", "a"), "1", memo) == stage_id("train", spec,
                                                                          ("b", "a"), "1")
    assert stage_id("train", specs[0], (), "1") != stage_id("train", specs[1], (), "1")


def _view(kinds: dict, fits=None) -> list[str]:
    from rich.console import Console

    from synscale.backends.failures import STATES
    info = {"study": "imagen_sweep", "run_dir": "/scratch/me/runs/imagen_sweep", "failures": [],
            "requeued": [], "fits": fits, "kinds": {}}
    for kind, counts in kinds.items():
        c = {st: 0 for st in STATES} | counts
        info["kinds"][kind] = c | {"total": sum(c.values()), "elapsed_s": 19 * 86400 + 4000,
                                   "arrays": ["45123456", "45123508", "45124001"]}
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(status.render(info))
    return console.export_text().splitlines()


def test_status_reads_whole_in_80_columns_at_real_scale():
    """Six kinds, every state, six-digit counts, eight-digit job ids, weeks
    elapsed: nothing is cut ("…" or a wrapped row) and nothing is wider than 80."""
    from synscale.backends.failures import STATES
    every = {st: 123 for st in STATES} | {"done": 112000}
    lines = _view({k: every for k in ("generate", "pack", "curate", "caption", "train",
                                      "evaluate")})
    table = lines[:lines.index(next(line for line in lines if "arrays:" in line))]
    assert max(len(line) for line in lines) <= 80
    assert not any("…" in line for line in table)
    rows = [line for line in table if line.split() and line.split()[0] in
            ("generate", "pack", "curate", "caption", "train", "evaluate")]
    assert len(rows) == 6 and all("19d 01:06" in r and "112000" in r for r in rows)
    assert "train arrays: 45123456 45123508 45124001" in lines


def test_status_hides_the_states_no_kind_is_in():
    lines = _view({"train": {"done": 5, "running": 1}, "evaluate": {"pending": 6}})
    header = next(line for line in lines if line.startswith("kind"))
    assert header.split() == ["kind", "done", "running", "pending", "total", "elapsed"]
