"""[generate] keep_shards = false: a generate stage's shards go once its pack
is done; the stage stays done, and a plan that needs them again renders them
again, bit-identically."""
import json
import shutil

from conftest import run_module
from synscale.plan import state
from synscale.plan.graph import Plan
from synscale.plan.layout import RunDir
from synscale.runtime.harness import execute

SYNTHETIC_ONLY = {'sources = ["real", "synthetic"]': 'sources = ["synthetic"]',
                  "synthetic_images_per_class = [4, 8, 16]": "synthetic_images_per_class = [8]",
                  "max_steps = 40": "max_steps = 20"}


def _launch(study, root):
    r = run_module("synscale.launch", study, "--root", root, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _shards(run):
    return {p.relative_to(run).as_posix(): p.read_bytes()
            for p in sorted(run.glob("pool/*/shard-*.npz"))}


def test_released_shards_come_back_bit_identical_when_needed_again(small_study, tmp_path):
    study = small_study("kept", **SYNTHETIC_ONLY, **{"batch_size = 8": "batch_size = 8\n"
                                                     "keep_shards = false"})
    first = _launch(study, tmp_path)
    run = tmp_path / "kept"
    plan = Plan.from_json((run / "plan.json").read_text())
    gens = [run / "stages/generate" / s.id for s in plan.of_kind("generate")]
    # shards gone, stages done, and the trainings and evaluations not held back
    assert first["failed"] == 0 and not _shards(run)
    assert all(state.is_done(g) and state.is_released(g) for g in gens)
    assert all(state.read_json(g / "RELEASED")["bytes"] > 0 for g in gens)
    assert all(state.is_done(run / "stages/evaluate" / s.id) for s in plan.of_kind("evaluate"))
    # what the shards held: the same stages rendered elsewhere (keep_shards is in no
    # stage's id: it changes no output)
    for s in plan.of_kind("generate"):
        execute(str(tmp_path / "ref"), s, {})
    reference = _shards(tmp_path / "ref")
    assert len(reference) == len(gens) * 5  # 5 classes per stage, one shard each

    # nothing needs them: a relaunch renders nothing
    again = _launch(study, tmp_path)
    assert again["submitted"] == 0 and not _shards(run)

    # the pack is lost (a later plan's new pack reading them would be the same): each
    # generate stage, asked again, renders them again, bit-identically
    (pack,) = plan.of_kind("pack")
    shutil.rmtree(run / "stages/pack" / pack.id)
    (run / "index/done.jsonl").unlink()  # the index is a cache of DONE files
    assert state.needed_again(plan, RunDir(run)) == {g.name for g in gens}
    for s in plan.of_kind("generate"):
        assert execute(str(run), s, {})["images_rendered"] > 0
    assert _shards(run) == reference
    assert not any(state.is_released(g) for g in gens)
    # and the relaunch packs them, and releases them again
    third = _launch(study, tmp_path)
    assert third["submitted"] == 1 and third["failed"] == 0
    assert all(state.is_released(g) for g in gens) and not _shards(run)
