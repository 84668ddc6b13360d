"""The paper's prompt strategies against known examples, the class metadata
against WordNet, Word2Sen with a tiny seq2seq model, IN-Captions, the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_module
from synscale.prompts import PromptOptions, build_pools, pick
from synscale.prompts.classes import class_list, find, imagenet1k
from synscale.prompts.word2sen import Word2Sen

TENCH = imagenet1k()[0]


def pool(strategy, c=TENCH):
    return build_pools(strategy, [c], PromptOptions(), seed=0).prompts[c.index]


def test_the_examples_the_paper_gives():
    assert pool("classnames+hypernyms") == ["Tench, Tinca tinca, cyprinid, cyprinid fish"]
    assert "a photo of the large tench" in pool("clip-templates-7")
    assert pool("classnames") == ["Tench, Tinca tinca"]
    assert pool("classnames+description") == [
        "Tench, Tinca tinca, freshwater dace-like game fish of Europe and western Asia noted "
        "for ability to survive outside water"]


def test_places_and_templates_give_pools_of_their_size():
    places = pool("classnames+hypernyms+places")
    assert len(set(places)) == 365
    assert "Tench, Tinca tinca, cyprinid, cyprinid fish inside bamboo forest" in places
    assert "Tench, Tinca tinca, cyprinid, cyprinid fish inside outdoor apartment building" in places
    assert all(p.startswith("Tench, Tinca tinca, freshwater dace-like") and " inside " in p
               for p in pool("classnames+description+places"))
    assert len(set(pool("clip-templates-80"))) == 80 and len(set(pool("clip-templates-7"))) == 7
    assert "a bad photo of a tench" in pool("clip-templates-80")


def test_glosses_lose_their_example_sentences_and_cased_names_stay_cased():
    ipod = find(imagenet1k(), "iPod")
    assert pool("classnames", ipod) == ["iPod"]
    # WordNet glosses append usage examples after '; "'
    with_examples = [c for c in imagenet1k() if '; "' in c.gloss]
    assert with_examples
    assert all('"' not in p for c in with_examples for p in pool("classnames+description", c))


def test_each_image_gets_its_prompt_from_seed_class_and_index_alone():
    prompts = pool("clip-templates-80")
    first = [pick(prompts, 0, 0, i) for i in range(200)]
    assert first == [pick(prompts, 0, 0, i) for i in range(200)]
    assert first[50:] == [pick(prompts, 0, 0, i) for i in range(50, 200)]  # no order effect
    assert first != [pick(prompts, 1, 0, i) for i in range(200)]
    assert len(set(first)) > 40  # 200 draws from 80 templates reach most of them


def test_metadata_file_is_what_the_builder_makes_from_wordnet(tmp_path):
    out = tmp_path / "imagenet1k.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools/build_class_metadata.py"),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (ROOT / "synscale/prompts/data/imagenet1k.json").read_bytes()
    classes = imagenet1k()
    assert len(classes) == 1000 and classes[999].wnid == "n15075141"
    assert [c.clip_name for c in classes[:3]] == ["tench", "goldfish", "great white shark"]
    # every chain climbs to WordNet's root
    assert all(c.hypernyms[-1] == ("entity",) for c in classes)


def test_strategies_that_need_wordnet_refuse_classes_with_names_only():
    digits = class_list("digits")
    with pytest.raises(ValueError, match="needs WordNet metadata"):
        build_pools("classnames+hypernyms", list(digits), PromptOptions(), seed=0)
    assert build_pools("clip-templates-7", list(digits), PromptOptions(), 0).prompts[3][0] \
        == "itap of a digit 3"


def test_a_class_file_of_wnids_brings_wordnet_metadata(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n01440764\nmy own class\n")
    tench, own = class_list(str(path))
    assert pool("classnames+hypernyms", tench) == ["Tench, Tinca tinca, cyprinid, cyprinid fish"]
    assert (own.index, own.clip_name, own.has_wordnet) == (1, "my own class", False)


def tiny_t5(folder: Path) -> Path:
    """A randomly initialized T5 and a tokenizer built in memory: no downloads."""
    import string

    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=77)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def test_word2sen_writes_seeded_sentences_that_name_the_class(tmp_path):
    model = str(tiny_t5(tmp_path / "t5"))
    classes = [TENCH, imagenet1k()[1]]
    writer = Word2Sen(model=model, per_class=6, max_new_tokens=12)
    options = PromptOptions(word2sen=writer)
    first = build_pools("word2sen", classes, options, seed=0)
    assert build_pools("word2sen", classes, options, seed=0).prompts == first.prompts
    assert build_pools("word2sen", classes, options, seed=1).prompts != first.prompts
    for c in classes:
        sentences = first.prompts[c.index]
        assert len(sentences) == 6 and all(c.clip_name in s for s in sentences)
    # a random model rarely writes the name itself: each such sentence is counted
    assert 0 < first.notes["sentences_given_the_name"] <= 12
    assert first.notes["word2sen_model"] == model


def test_in_captions_read_json_and_tsv_and_name_what_is_missing(tmp_path):
    as_json = tmp_path / "captions.json"
    as_json.write_text(json.dumps({"n01440764": ["a man holding a fish.", "a fish on grass"]}))
    prompts = build_pools("in-captions", [TENCH], PromptOptions(captions=str(as_json)), 0).prompts
    assert prompts[0] == ["Tench, Tinca tinca, a man holding a fish", "Tench, Tinca tinca, a fish on grass"]
    as_tsv = tmp_path / "captions.tsv"
    as_tsv.write_text("class\tcaption\ngoldfish\ta goldfish in a bowl\n")
    goldfish = imagenet1k()[1]
    assert build_pools("in-captions", [goldfish], PromptOptions(captions=str(as_tsv)),
                       0).prompts[1] == ["Goldfish, Carassius auratus, a goldfish in a bowl"]
    with pytest.raises(ValueError, match="no captions for tench"):
        build_pools("in-captions", [TENCH], PromptOptions(captions=str(as_tsv)), 0)


def test_preview_command_prints_prompts_per_class():
    r = run_module("synscale.prompts", "classnames+hypernyms", "--classes", "tench", "goldfish",
                   "--n", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "tench": ["Tench, Tinca tinca, cyprinid, cyprinid fish"] * 2,
        "goldfish": ["Goldfish, Carassius auratus, cyprinid, cyprinid fish"] * 2}
    table = run_module("synscale.prompts", "clip-templates-80", "--classes", "tench")
    assert table.returncode == 0 and "tench" in table.stdout
    bad = run_module("synscale.prompts", "classnames", "--classes", "tenchh")
    assert bad.returncode == 2 and "did you mean 'tench'" in bad.stderr
    unknown = run_module("synscale.prompts", "captions")
    assert unknown.returncode == 2 and "in-captions" in unknown.stderr
