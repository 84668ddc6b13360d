"""The README documents every study key and the embedded study as it is."""
from dataclasses import fields

from conftest import ROOT
from synscale.study.schema import SECTIONS


def test_readme_lists_every_key_and_the_embedded_study():
    readme = (ROOT / "README.md").read_text()
    assert readme.startswith("# synscale\n\n```\nmake demo")
    for name, cls in SECTIONS.items():
        assert f"`[{name}]`" in readme
        for f in fields(cls):
            assert f"| `{f.name}` |" in readme, f"README lacks {name}.{f.name}"
    assert (ROOT / "studies/digits_sweep.toml").read_text().strip() in readme
