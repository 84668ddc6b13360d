#!/usr/bin/env python
"""Print the study-file key reference (markdown) from the schema itself.

The README's reference section is this script's output; a test checks that
every key of the schema appears there, so the two cannot drift apart.
"""
from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from pathlib import Path


def reference() -> str:
    from synscale.study.schema import RESOURCE_KINDS, SECTIONS, Resources, RetryPolicy

    tables = {**SECTIONS, "resources.<kind>": Resources, "retry.<kind>": RetryPolicy}
    lines = []
    for name, cls in tables.items():
        if name == "resources.<kind>":
            lines += [f"One table per stage kind ({', '.join(RESOURCE_KINDS)}): what the slurm "
                      "backend asks for, checked against the site profile before anything is "
                      "submitted.", ""]
        if name == "retry.<kind>":
            lines += ["One table per stage kind: how a slurm relaunch resubmits a stage whose "
                      "job failed, by the failure's class.", ""]
        lines += [f"`[{name}]`", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in fields(cls):
            m = f.metadata
            default = f.default if f.default is not MISSING else f.default_factory()
            if m.get("required"):
                shown = "required"
            elif isinstance(default, tuple):
                shown = "[" + ", ".join(repr(v) if isinstance(v, str) else str(v)
                                        for v in default) + "]"
            else:
                shown = repr(default) if isinstance(default, str) else str(default)
            rules = []
            if "choices" in m:
                rules.append(" \\| ".join(str(c) for c in m["choices"]))
            if "min" in m:
                rules.append(f">= {m['min']}")
            if "max" in m:
                rules.append(f"<= {m['max']}")
            if m.get("axis"):
                rules.append("one value or a list (sweep axis)")
            if m.get("list"):
                rules.append("a list, possibly empty")
            lines.append(f"| `{f.name}` | `{shown}` | {'; '.join(rules)} | {m['doc']} |")
        lines.append("")
    return "\n".join(lines)


BEGIN, END = "<!-- study keys: begin -->", "<!-- study keys: end -->"


def update(readme: Path) -> None:
    """Replace the README's key reference (between the markers) with reference()."""
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{reference().strip()}\n{END}{tail}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1:2] == ["--update"]:
        update(Path(sys.argv[2]))
    else:
        print(reference())
