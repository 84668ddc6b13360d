"""Study files: every problem at once, each naming file, key, value and rule."""
import json

import pytest

from conftest import ROOT, run_module
from synscale.study.load import StudyError, load_study


def problems_of(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(StudyError) as e:
        load_study(path)
    return e.value.problems


BASE = """
[study]
name = "t"
[sweep]
real_images_per_class = [4, 8]
synthetic_images_per_class = [4, 8]
[model]
width = [16]
"""


def test_embedded_studies_load():
    s = load_study(ROOT / "studies/digits_sweep.toml")
    assert s.sweep.sources == ("real", "synthetic")
    assert len(s.generate.guidance) >= 3 and len(s.sweep.real_images_per_class) >= 6
    assert max(s.sweep.synthetic_images_per_class) > max(s.sweep.real_images_per_class)
    assert load_study(ROOT / "studies/imagen_sweep.toml").model.arch == "vit_base_patch16_224"


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    (p,) = problems_of(tmp_path, BASE + "[train]\nbatchsize = 64\n")
    assert "train.batchsize" in p and "unknown key" in p and "'batch_size'" in p
    assert str(tmp_path / "s.toml") in p


def test_unknown_table(tmp_path):
    (p,) = problems_of(tmp_path, BASE + "[trian]\nlr = 1.0\n")
    assert "[trian]" in p and "[train]" in p


def test_wrong_type_names_value_and_expectation(tmp_path):
    (p,) = problems_of(tmp_path, BASE + '[train]\nlr = "fast"\n')
    assert "train.lr = 'fast'" in p and "expected a number" in p


def test_empty_sweep(tmp_path):
    text = BASE.replace("real_images_per_class = [4, 8]", "real_images_per_class = []")
    (p,) = problems_of(tmp_path, text)
    assert "sweep.real_images_per_class = []" in p and "at least one value" in p


def test_bad_choice_lists_allowed_values(tmp_path):
    (p,) = problems_of(tmp_path, BASE + '[generate]\ngenerators = ["imagenn"]\n')
    assert "'imagenn'" in p and "'imagen'" in p and "'embedded-ddpm'" in p


def test_several_problems_at_once(tmp_path):
    text = BASE + '[train]\nlr = "x"\nbatchsize = 1\nmin_steps = 0\n[evaluate]\nsets = ["nope"]\n'
    found = problems_of(tmp_path, text)
    assert len(found) == 4
    assert any("train.min_steps = 0" in p and ">= 1" in p for p in found)


def test_cross_checks(tmp_path):
    found = problems_of(tmp_path, BASE.replace("width = [16]", "width = [15]\nheads = 2")
                        .replace("[4, 8]\nsynth", "[4, 500]\nsynth"))
    assert any("model.width = 15" in p and "heads" in p for p in found)
    assert any("sweep.real_images_per_class = [500]" in p and "pool" in p for p in found)


def test_cli_reports_and_writes_nothing(tmp_path):
    study = tmp_path / "bad.toml"
    study.write_text(BASE + '[train]\nlr = "x"\nbatchsize = 1\n')
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs")
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "train.batchsize" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_path_stops_launch_before_writing(tmp_path):
    study = tmp_path / "folder.toml"
    study.write_text((ROOT / "studies/imagen_sweep.toml").read_text()
                     .replace("/datasets/imagenet/train", str(tmp_path / "missing")))
    dry = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["stages"]["train"] > 0 and plan["to_run"] == sum(plan["stages"].values())
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--backend", "local")
    assert r.returncode == 2
    assert f"data.train_dir = '{tmp_path / 'missing'}': no such directory" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_generator_settings_are_checked_against_each_generator(tmp_path):
    digits = BASE + ('[generate]\ngenerators = ["embedded-ddpm", "stable-diffusion"]\n'
                     'weights = { stable-diffusion = "/ckpt/sd" }\n'
                     'prompts = ["classnames+hypernyms", "clip-templates-7"]\n')
    found = problems_of(tmp_path, digits)
    assert any("['stable-diffusion']" in p and "only 'embedded-ddpm'" in p for p in found)
    assert any("generate.prompts = ['classnames+hypernyms']" in p and "WordNet" in p for p in found)
    folder = ('[study]\nname = "f"\n[data]\ndataset = "imagefolder"\ntrain_dir = "/a"\n'
              'val_dir = "/b"\nclasses = "imagenet-1k"\n[sweep]\nsources = ["synthetic"]\n'
              'synthetic_images_per_class = [10]\n[model]\narch = "vit_tiny_patch16_224"\n'
              '[evaluate]\nsets = ["imagenet-val"]\n')
    found = problems_of(tmp_path, folder + (
        '[generate]\ngenerators = ["imagen", "muse"]\nscheduler = "ddim"\n'
        'weights = { imagen = ["a/b", "c/d", "e/f"], muse = "amused/amused-256" }\n'
        'prompts = ["in-captions"]\n[generate.options.imagen]\nsr_step = 20\n'))
    assert any("generate.weights.imagen = " in p and "stage I, then stage II" in p for p in found)
    assert any("generate.scheduler = 'ddim'" in p and "'muse' samples with 'default'" in p
               for p in found)
    assert any("generate.options.imagen.sr_step: unknown" in p and "sr_steps" in p for p in found)
    assert not any("prompts.captions" in p for p in found)  # a captioning stage writes them
    good = folder + ('[generate]\ngenerators = ["imagen"]\nweights = { imagen = ["a/b", "c/d"] }\n'
                     '[generate.options.imagen]\nsr_steps = 20\n')
    path = tmp_path / "good.toml"
    path.write_text(good)
    assert load_study(path).generate.options == {"imagen": {"sr_steps": 20}}


def test_missing_checkpoints_stop_the_launch_before_anything_is_written(tmp_path):
    study = tmp_path / "sd.toml"
    study.write_text((ROOT / "studies/imagen_sweep.toml").read_text()
                     .replace('"/datasets/imagenet/train"', f'"{tmp_path}"')
                     .replace('"/datasets/imagenet/val"', f'"{tmp_path}"')
                     .replace('"DeepFloyd/IF-II-L-v1.0"', f'"{tmp_path / "no-such-folder"}"'))
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--backend", "local")
    assert r.returncode == 2
    assert ("generate.weights.imagen[0] = 'DeepFloyd/IF-I-XL-v1.0': not in the Hugging Face "
            "cache") in r.stderr
    assert f"generate.weights.imagen[1] = '{tmp_path / 'no-such-folder'}': no such folder" \
        in r.stderr
    assert "prompts.word2sen_model = 'google/flan-t5-large'" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_out_of_distribution_sets_need_their_folders(tmp_path):
    text = (ROOT / "studies/imagen_sweep.toml").read_text()
    text = text.replace('imagenet-a = "/datasets/imagenet-a"\n', 'imagenet-val = "/x"\n')
    found = problems_of(tmp_path, text)
    assert any("evaluate.dirs.imagenet-a: missing" in p for p in found)
    assert any("evaluate.dirs.imagenet-val: not an out-of-distribution set" in p for p in found)


def test_clip_and_mixture_keys_are_checked_against_the_objective(tmp_path):
    s = load_study(ROOT / "studies/digits_clip.toml")
    assert s.model.objective == "clip" and "mixture" in s.sweep.sources
    found = problems_of(tmp_path, BASE.replace("[model]", '[model]\narch = "ViT-B-16"') +
                        '[data]\ncaption_pairs = "pairs.tsv"\n')
    assert any("model.arch = 'ViT-B-16'" in p and "vit_base_patch16_224" in p for p in found)
    assert any("data.caption_pairs" in p and "objective" in p for p in found)
    found = problems_of(tmp_path, BASE.replace("[model]", '[model]\nobjective = "clip"') +
                        '[train]\nmixup = 0.8\n[data]\ncaption_prompts = "classnames+hypernyms"\n')
    assert any("train.mixup = 0.8" in p and "'clip'" in p for p in found)
    assert any("caption_prompts = 'classnames+hypernyms'" in p and "WordNet" in p for p in found)
    found = problems_of(tmp_path, BASE.replace(
        "[sweep]", '[sweep]\nsources = ["mixture"]\nmixture_images_per_class = [200]\n'
                   'synthetic_shares = [0.1, 0.5]'))
    # 200 images at a 10% share read 180 real ones per class; the pool has fewer
    assert any("mixture_images_per_class = [200]" in p and "180 real" in p for p in found)
    found = problems_of(tmp_path, BASE.replace("[sweep]", '[sweep]\nsources = ["mixture"]'))
    assert any("sweep.mixture_images_per_class = []" in p for p in found)
