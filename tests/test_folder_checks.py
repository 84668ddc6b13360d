"""A user's folders are checked before anything runs, from listings: each
mistake is refused by the dry run and the launch with its names, and
`python -m synscale.check --decode` lists the files that do not decode."""
import json

import pytest

from conftest import class_folders, run_module

NAMES = ("circle", "square", "triangle")
STUDY = """
[study]
name = "shapes"
[data]
dataset = "imagefolder"
train_dir = "{root}/train"
val_dir = "{root}/val"
classes = "{root}/classes.txt"
resolution = 16
[sweep]
sources = ["real"]
real_images_per_class = [2, 4]
[model]
width = [16]
depth = 1
heads = 2
patch_size = 8
[train]
min_steps = 2
max_steps = 2
[evaluate]
sets = {sets}
workers = 0
{more}
[backend]
workers = 1
"""


def _study(tmp_path, sets='["imagenet-val"]', more=""):
    (tmp_path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    study = tmp_path / "shapes.toml"
    study.write_text(STUDY.format(root=tmp_path, sets=sets, more=more))
    return study


def _refused(study, tmp_path, *needles):
    dry = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    said = " ".join(dry.stdout.split())
    for n in needles:
        assert n in said, (n, dry.stdout[-3000:])
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs")
    assert r.returncode == 2 and not (tmp_path / "runs").exists(), r.stderr
    return " ".join(r.stderr.split())


def test_folder_mistakes_are_refused_before_anything_runs(tmp_path):
    class_folders(tmp_path / "train", NAMES, 4)
    (tmp_path / "train/square").rename(tmp_path / "sq")
    (tmp_path / "train/square").mkdir()  # empty
    for f in sorted((tmp_path / "train/triangle").iterdir())[:1]:
        f.unlink()  # 3 images; the study reads 4
    class_folders(tmp_path / "val", ("circles", "Square", "triangle"), 2)
    said = _refused(_study(tmp_path), tmp_path,
                    "2 class folder(s) hold fewer images than the 4 per class",
                    "square (0), triangle (3)",
                    "'Square' (did you mean 'square'?)", "'circles' (did you mean 'circle'?)")
    assert "square (0)" in said and "'circles' (did you mean 'circle'?)" in said


def test_an_evaluation_folder_lacking_a_class_needs_partial_and_sets_of_ones_own(tmp_path):
    class_folders(tmp_path / "train", NAMES, 4)
    class_folders(tmp_path / "val", NAMES[:2], 2)
    said = _refused(_study(tmp_path), tmp_path, "no images for 1 of the 3 classes it is scored "
                    "on: triangle", "partial = true")
    assert "triangle" in said
    # a set of one's own, "inverted", holding two classes its mask names
    class_folders(tmp_path / "inverted", NAMES[1:], 2, seed=3)
    (tmp_path / "inverted.txt").write_text("square\ntriangle\n")
    own = f'partial = true\n[evaluate.dirs]\ninverted = "{tmp_path}/inverted"\n' \
          f'[evaluate.masks]\ninverted = "{tmp_path}/inverted.txt"'
    study = _study(tmp_path, sets='["imagenet-val", "inverted"]', more=own)
    dry = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--dry-run")
    assert "would stop at launch" not in dry.stdout
    ok = run_module("synscale.check", study, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["problems"] == []
    # run: each score says it is over the 2 classes the folder holds
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    import csv
    results = tmp_path / "runs/shapes/results"
    with open(results / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((row["eval_set"], row["classes"]) for row in rows) == \
        [("imagenet-val", "2")] * 2 + [("inverted", "2")] * 2
    metrics = [json.loads(p.read_text())
               for p in (tmp_path / "runs/shapes/stages/evaluate").glob("*/metrics.json")]
    inverted = [m for m in metrics if m["eval_set"] == "inverted"]
    assert len(inverted) == 2 and all(m["classes_scored"] == 2 and
                                      m["per_class_top1"][0] is None for m in inverted)
    shown = [p for p in results.rglob("*") if p.is_file() and p.suffix in (".md", ".txt",
                                                                            ".json", ".csv")]
    assert any("inverted" in p.read_text() for p in shown if p.name != "metrics.csv")
    assert (results / "plots/scaling.png").stat().st_size > 0


@pytest.mark.parametrize("decode", [False, True])
def test_check_lists_the_folders_and_with_decode_the_undecodable_files(tmp_path, decode):
    class_folders(tmp_path / "train", NAMES, 4)
    class_folders(tmp_path / "val", NAMES, 2)
    (tmp_path / "train/square/zz_bad.JPEG").write_text("not an image")
    (tmp_path / "val/circle/empty.png").write_bytes(b"")
    study = _study(tmp_path)
    r = run_module("synscale.check", study, "--json", *(["--decode", "--workers", "2"]
                                                        if decode else []))
    out = json.loads(r.stdout)
    assert [(f["set"], f["images"]) for f in out["folders"]] == [("train", 13),
                                                                  ("imagenet-val", 7)]
    bad = sorted(p["path"].rsplit("/", 2)[-2] + "/" + p["path"].rsplit("/", 1)[1]
                 for p in out["undecodable"])
    assert bad == (["circle/empty.png", "square/zz_bad.JPEG"] if decode else [])
    assert r.returncode == (1 if decode else 0) and out["problems"] == []
    shown = run_module("synscale.check", study, *(["--decode"] if decode else []))
    assert "Image folders of shapes" in shown.stdout
    assert ("2 undecodable file(s)" if decode else "no problems") in shown.stdout
