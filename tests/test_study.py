"""Study files: every problem at once, each naming file, key, value and rule."""
import json

import pytest

from conftest import ROOT, run_module
from synscale.study.expand import expand
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


def launch_fails(tmp_path, text):
    """Launch a bad study as a user does: exit 2 and nothing written anywhere
    (a study named '..' would write beside its run root); returns stderr."""
    here = tmp_path / "launch"
    here.mkdir()
    study = here / "bad.toml"
    study.write_text(text)
    r = run_module("synscale.launch", study, "--root", here / "root" / "runs")
    assert r.returncode == 2, r.stderr
    assert list(here.iterdir()) == [study]
    return r.stderr


def test_unknown_table(tmp_path):
    (p,) = problems_of(tmp_path, BASE + "[trian]\nlr = 1.0\n")
    assert "s.toml: trian: unknown table; allowed: study, data" in p
    assert "(did you mean 'train'?)" in p
    (p,) = problems_of(tmp_path, BASE + "[resources.trian]\ncpus = 2\n")
    assert "resources.trian: unknown stage kind" in p and "(did you mean 'train'?)" in p


# Each way TOML spells an unknown table, and the name its problem gives it;
# each goes before BASE (a dotted key names a table only before any [table]).
UNKNOWN_TABLES = {
    "dotted.key = 1": "dotted: unknown table; allowed: study,",
    "[foo]\nx = 1": "foo: unknown table; allowed: study,",
    "[bar.baz]": "bar.baz: unknown table; allowed: study,",
    "[resources.foo]": "resources.foo: unknown stage kind; allowed: caption,",
    "[retry.foo.bar]": "retry.foo.bar: unknown stage kind; allowed: caption,",
    "[train.extra]": "train.extra: unknown key; allowed: batch_size,",
    '[""]': '"": unknown table; allowed: study,',
    "[[arr]]": "arr: unknown table; allowed: study,",
}


@pytest.mark.parametrize("table", UNKNOWN_TABLES)
def test_unknown_tables_are_named_by_their_path(tmp_path, table):
    (p,) = problems_of(tmp_path, table + "\n" + BASE)
    assert f"s.toml: {UNKNOWN_TABLES[table]}" in p


def test_launch_names_every_unknown_table_at_once(tmp_path):
    # the launcher prints problems as rich markup, which once ate '[foo]' whole
    err = launch_fails(tmp_path, "\n".join(UNKNOWN_TABLES) + "\n" + BASE)
    for named in UNKNOWN_TABLES.values():
        assert f"bad.toml: {named}" in err
    assert f"{len(UNKNOWN_TABLES)} problem(s)" in err


# TOML reads 1e400 as inf.
NON_FINITE = {"nan": "nan", "inf": "inf", "-inf": "-inf", "1e400": "inf"}
NUMBER_KEYS = {  # where a float is read -> (TOML, key path)
    "axis": ("[generate]\nguidance = [0.0, {}]", "generate.guidance"),
    "scalar": ("[train]\nlr = {}", "train.lr"),
    "list": ("[curate]\nthresholds = [0.5, {}]", "curate.thresholds"),
    "resources": ("[resources.train]\nmem_gb = {}", "resources.train.mem_gb"),
    "retry": ("[retry.generate]\noom_mem_factor = {}", "retry.generate.oom_mem_factor"),
    "blend share": ("[curate.blends.half]\n'guidance=0.0' = {}", "curate.blends.half.guidance=0.0"),
    "generator option": ('[generate]\ngenerators = ["imagen"]\n[generate.options.imagen]\n'
                         "sr_steps = {}", "generate.options.imagen.sr_steps"),
}


@pytest.mark.parametrize("toml", NON_FINITE)
@pytest.mark.parametrize("place", NUMBER_KEYS)
def test_numbers_must_be_finite(tmp_path, place, toml):
    table, key = NUMBER_KEYS[place]
    found = problems_of(tmp_path, BASE + table.format(toml) + "\n")
    assert any(f"{key} = {NON_FINITE[toml]}: must be a finite number" in p for p in found), found


def test_launch_stops_at_non_finite_numbers(tmp_path):
    err = launch_fails(tmp_path, BASE + "".join(
        NUMBER_KEYS[place][0].format(toml) + "\n"
        for place, toml in (("axis", "nan"), ("scalar", "inf"), ("list", "-inf"),
                            ("resources", "1e400"))))
    for key, shown in (("generate.guidance", "nan"), ("train.lr", "inf"),
                       ("curate.thresholds", "-inf"), ("resources.train.mem_gb", "inf")):
        assert f"{key} = {shown}: must be a finite number" in err


def test_profile_numbers_must_be_finite(tmp_path):
    from synscale.backends.profile import load_profile
    (tmp_path / "p.toml").write_text("max_mem_gb = nan\n")
    profile, found = load_profile("p.toml", str(tmp_path / "s.toml"))
    assert profile is None
    assert found == [f"{tmp_path / 'p.toml'}: max_mem_gb = nan: must be a finite number"]


@pytest.mark.parametrize("name", [".", "..", "a\n", "-rf", "caf\u00e9"])
def test_study_name_is_one_safe_folder_name(tmp_path, name):
    text = BASE.replace('name = "t"', f"name = {json.dumps(name)}")
    (p,) = problems_of(tmp_path, text)
    assert f"study.name = {name!r}: must be one folder name of ASCII letters (A-Z, a-z), " \
           "digits, '_', '.' and '-', not starting with '-'" in p
    assert f"study.name = {name!r}" in launch_fails(tmp_path, text)


def test_study_name_may_hold_dots(tmp_path):
    for name in ("v1.2_b-3", "...", ".hidden"):
        path = tmp_path / "s.toml"
        path.write_text(BASE.replace('name = "t"', f'name = "{name}"'))
        assert load_study(path).study.name == name


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
    # (a name of one's own is a set whose folder is looked for; this one cannot be a name)
    text = BASE + '[train]\nlr = "x"\nbatchsize = 1\nmin_steps = 0\n[evaluate]\nsets = ["no pe"]\n'
    found = problems_of(tmp_path, text)
    assert len(found) == 4
    assert any("train.min_steps = 0" in p and ">= 1" in p for p in found)


def test_cross_checks(tmp_path):
    found = problems_of(tmp_path, BASE.replace("width = [16]", "width = [15]\nheads = 2")
                        .replace("[4, 8]\nsynth", "[4, 500]\nsynth"))
    assert any("model.width = 15" in p and "heads" in p for p in found)
    assert any("sweep.real_images_per_class = [500]" in p and "pool" in p for p in found)


def test_cli_reports_and_writes_nothing(tmp_path):
    err = launch_fails(tmp_path, BASE + '[train]\nlr = "x"\nbatchsize = 1\n')
    assert "train.lr" in err and "train.batchsize" in err


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
    found += problems_of(tmp_path, folder + (
        '[generate]\ngenerators = ["muse"]\nweights = { muse = "amused/amused-256" }\n'
        'text_encoder_precision = "bf16"\n'))
    assert any("generate.weights.imagen = " in p and "stage I, then stage II" in p for p in found)
    assert any("generate.scheduler = 'ddim'" in p and "'muse' samples with 'default'" in p
               for p in found)
    assert any("generate.options.imagen.sr_step: unknown" in p and "sr_steps" in p for p in found)
    assert any("generate.text_encoder_precision = 'bf16': only imagen" in p and "muse" in p
               for p in found)
    assert not any("prompts.captions" in p for p in found)  # a captioning stage writes them
    good = folder + ('[generate]\ngenerators = ["imagen"]\nweights = { imagen = ["a/b", "c/d"] }\n'
                     'text_encoder_precision = "bf16"\n[generate.options.imagen]\nsr_steps = 20\n')
    path = tmp_path / "good.toml"
    path.write_text(good)
    assert load_study(path).generate.options == {"imagen": {"sr_steps": 20}}
    # T5's precision is part of what a render is (its id); left out, ids are as they were
    held = {s.spec.get("text_encoder_precision")
            for s in expand(load_study(path)).of_kind("generate")}
    path.write_text(good.replace('text_encoder_precision = "bf16"\n', ""))
    plain = expand(load_study(path)).of_kind("generate")
    assert held == {"bf16"}
    assert all("text_encoder_precision" not in s.spec for s in plain)  # wired: what ids hash


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
    assert any("evaluate.dirs.imagenet-val: not a set of evaluate.sets read from a folder" in p
               for p in found)


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


def test_a_class_list_that_is_neither_known_nor_a_file(tmp_path):
    text = ('[study]\nname = "f"\n[data]\ndataset = "imagefolder"\ntrain_dir = "/a"\n'
            f'val_dir = "/b"\nclasses = "{tmp_path}/nope.txt"\n'
            '[sweep]\nsources = ["real"]\nreal_images_per_class = [2]\n[model]\nwidth = [16]\n'
            '[evaluate]\nsets = ["imagenet-val"]\n')
    problem = f"data.classes = '{tmp_path}/nope.txt': neither a known class list (imagenet-1k, digits)"
    assert any(problem in p for p in problems_of(tmp_path, text))
    assert problem in launch_fails(tmp_path, text)  # exit 2, nothing written
    (tmp_path / "nope.txt").write_text("n01440764\n")
    assert load_study(tmp_path / "s.toml").data.classes.endswith("nope.txt")


def test_image_format_is_lossless_for_the_embedded_ddpm_and_resolved_per_generator(tmp_path):
    from synscale.study.expand import expand
    base = ('[study]\nname = "f"\n[sweep]\nsources = ["synthetic"]\n'
            'synthetic_images_per_class = [2]\n[model]\nwidth = [16]\n[generate]\n')
    problem = "generate.image_format = 'jpeg': the embedded DDPM renders float samples"
    assert problem in launch_fails(tmp_path, base + 'image_format = "jpeg"\n')
    (tmp_path / "s.toml").write_text(base)
    gens = expand(load_study(tmp_path / "s.toml")).of_kind("generate")
    # auto: png, and no quality in the spec (it cannot change a lossless shard)
    assert {g.spec["image_format"] for g in gens} == {"png"}
    assert not any("image_quality" in g.spec for g in gens)


def test_schema_image_formats_are_the_shard_writers():
    from synscale.data.shards import FORMATS
    from synscale.study.schema import IMAGE_FORMATS
    assert IMAGE_FORMATS == ("auto", *FORMATS)


def test_shards_must_hold_whole_sampler_batches(tmp_path):
    big = BASE.replace("synthetic_images_per_class = [4, 8]", "synthetic_images_per_class = [4000]")
    (p,) = problems_of(tmp_path, big + "[generate]\nbatch_size = 64\nshard_images = 1000\n")
    assert "generate.shard_images = 1000 with batch_size = 64" in p and "(960, 1024)" in p
    assert "a batch_size dividing 1000 (50, 40, 25, ...)" in p and ">= 4000" in p
    for fine in ("batch_size = 50\nshard_images = 1000", "batch_size = 64\nshard_images = 1024",
                 "batch_size = 64\nshard_images = 4000"):  # the last: one shard a class
        path = tmp_path / "fine.toml"
        path.write_text(big + f"[generate]\n{fine}\n")
        assert load_study(path).generate.shard_images % 2 == 0


def test_the_dry_run_says_what_whole_last_batches_cost(tmp_path):
    dry = {}
    for batch in (6, 8):
        path = tmp_path / f"pad{batch}.toml"
        path.write_text(BASE.replace('name = "t"', f'name = "pad{batch}"')
                        + f"[generate]\nbatch_size = {batch}\n")
        r = run_module("synscale.launch", path, "--dry-run", "--json", "--root", tmp_path / "runs")
        assert r.returncode == 0, r.stderr
        dry[batch] = json.loads(r.stdout)
    (note,) = dry[6]["notes"]
    assert "renders 4 images past the 8 the study reads (50.0% more generation, kept" in note
    assert "a batch_size dividing 8 (4, 2, 1, ...)" in note
    assert dry[8]["notes"] == []
    assert not (tmp_path / "runs").exists()
    # and the cost counts them: 12 images rendered a class against 8
    from synscale.plan import cost
    from synscale.study.expand import expand
    seconds = {}
    for batch in (6, 8):
        study = load_study(tmp_path / f"pad{batch}.toml")
        seconds[batch] = cost.estimate(study, expand(study), "local")["generate"].seconds
    assert seconds[8] > 0 and seconds[6] == pytest.approx(1.5 * seconds[8])
