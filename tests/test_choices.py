"""Each list of allowed values a study file offers matches the registry of
the thing it names (the schema restates them: every stage runner imports it,
and importing the registries would widen what code pinning deems each kind
to run), so adding a generator, a law, an image format or a score in one
place and not the other fails here rather than on a cluster."""
from dataclasses import fields

import pytest

from synscale.study import schema


def _fit():
    from synscale.analysis import fit
    return fit


def pairs():
    from synscale.data import evalsets, shards
    from synscale.generators import FAMILIES, SAMPLERS, pipeline, scores
    from synscale.plan import footprint
    from synscale.prompts import STRATEGIES
    from synscale.prompts.strategies import POOLS
    from synscale.runtime import device
    fit = _fit()
    return {
        "laws (analysis/fit.py: LAWS and its fitters)": (schema.LAWS, fit.LAWS, tuple(fit.FITTERS)),
        "image formats (data/shards.py, and auto)": (schema.IMAGE_FORMATS, ("auto", *shards.FORMATS)),
        "scores (generators/scores.py)": (schema.SCORES, scores.SCORES),
        "curation scores (the scorer's columns)": (schema.CURATION_SCORES,
                                                   tuple(scores.COLUMNS[s] for s in scores.SCORES)),
        "eval sets (data/evalsets.py, and the digits' own)": (
            schema.EVAL_SETS, ("digits-test", *evalsets.FOLDER_SETS)),
        "generators (a family for each but the embedded DDPM)": (
            schema.GENERATORS, ("embedded-ddpm", *FAMILIES), tuple(SAMPLERS)),
        "schedulers (diffusers' classes by name, and default)": (
            schema.SCHEDULERS, ("default", *pipeline.SAMPLERS)),
        "prompt strategies": (schema.PROMPT_STRATEGIES, STRATEGIES),
        "schedulers each generator takes (generators/__init__.py)": (
            schema.SCHEDULERS, tuple(dict.fromkeys(s for v in SAMPLERS.values() for s in v))),
        "devices (runtime/device.py)": (schema.DEVICES, device.DEVICES),
        "generation precisions (the pipelines' dtypes, footprint's bytes)": (
            schema.GENERATE_PRECISIONS, tuple(footprint.PRECISION_BYTES)),
        "zero-shot template sets (template pools)": (
            schema.ZERO_SHOT_TEMPLATES, tuple(s for s in schema.ZERO_SHOT_TEMPLATES if s in POOLS)),
        "caption strategies (pools from the class alone)": (
            schema.CAPTION_STRATEGIES, tuple(s for s in schema.CAPTION_STRATEGIES if s in POOLS
                                             and "places" not in s)),
    }


@pytest.mark.parametrize("name", list(pairs()))
def test_a_choice_list_matches_its_registry(name):
    first, *others = pairs()[name]
    for other in others:
        assert set(first) == set(other), f"{name}: {first} vs {other}"
    assert len(set(first)) == len(first), f"{name}: {first} repeats a value"


def test_the_pipelines_precisions_are_the_schemas():
    """generators/pipeline.py maps each generation precision to a torch
    dtype inside a function (torch stays unimported); read it from the source."""
    import inspect

    from synscale.generators import pipeline
    source = inspect.getsource(pipeline.dtype_of)
    for p in schema.GENERATE_PRECISIONS:
        assert f'"{p}": torch.' in source, p
    assert set(schema.PRECISIONS) <= set(schema.GENERATE_PRECISIONS)
    text = {f.name: f for f in fields(schema.GenerateSection)}["text_encoder_precision"]
    assert text.metadata["choices"] == ("",) + schema.GENERATE_PRECISIONS
