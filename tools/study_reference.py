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
    from synscale.study.schema import SECTIONS

    lines = []
    for name, cls in SECTIONS.items():
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
            lines.append(f"| `{f.name}` | `{shown}` | {'; '.join(rules)} | {m['doc']} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(reference())
