"""Build synscale/prompts/data/imagenet1k.json: per ImageNet-1k class, its wnid,
WordNet names, CLIP name, gloss and hypernym chain.

    python tools/build_class_metadata.py [--wordnet /usr/share/wordnet] [--out PATH]

Reads the WordNet 3.0 noun database (Debian's wordnet-base package; ImageNet
wnids are "n" + the 3.0 synset offset, which later WordNet versions change)
and the class lists shipped beside the output (wnids in class order, CLIP's
cleaned names). The output is deterministic: rebuilding it gives the same
bytes, which tests/test_prompts.py checks where WordNet is installed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "synscale" / "prompts" / "data"
HYPERNYM_POINTERS = ("@", "@i")  # hypernym, instance hypernym


def read_nouns(wordnet: Path) -> dict[str, dict]:
    """offset -> {"words": [...], "hypernyms": [offsets], "gloss": str} from data.noun."""
    nouns = {}
    with open(wordnet / "data.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # the license header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            offset, w_cnt = fields[0], int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
            at = 4 + 2 * w_cnt
            p_cnt = int(fields[at])
            pointers = [fields[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(p_cnt)]
            hypernyms = [p[1] for p in pointers if p[0] in HYPERNYM_POINTERS and p[2] == "n"]
            nouns[offset] = {"words": words, "hypernyms": hypernyms, "gloss": gloss.strip()}
    return nouns


def chain(nouns: dict, offset: str) -> list[list[str]]:
    """Names of the hypernyms from the direct parent up to the root, following
    the first hypernym pointer (WordNet's primary one) at each step."""
    out, seen = [], {offset}
    while nouns[offset]["hypernyms"]:
        offset = nouns[offset]["hypernyms"][0]
        if offset in seen:
            break
        seen.add(offset)
        out.append(nouns[offset]["words"])
    return out


def build(wordnet: Path) -> list[dict]:
    nouns = read_nouns(wordnet)
    wnids = (DATA / "imagenet1k_wnids.txt").read_text().split()
    clip = (DATA / "imagenet1k_clip_classnames.txt").read_text().splitlines()
    if len(wnids) != 1000 or len(clip) != 1000:
        raise SystemExit(f"expected 1000 wnids and CLIP names, got {len(wnids)} and {len(clip)}")
    classes = []
    for index, (wnid, clip_name) in enumerate(zip(wnids, clip)):
        synset = nouns.get(wnid[1:])
        if synset is None:
            raise SystemExit(f"{wnid}: not in {wordnet}/data.noun; is it WordNet 3.0?")
        classes.append({"index": index, "wnid": wnid, "names": synset["words"],
                        "clip_name": clip_name, "gloss": synset["gloss"],
                        "hypernyms": chain(nouns, wnid[1:])})
    return classes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"),
                   help="folder holding WordNet 3.0's data.noun (apt-get install wordnet-base)")
    p.add_argument("--out", type=Path, default=DATA / "imagenet1k.json")
    args = p.parse_args(argv)
    if not (args.wordnet / "data.noun").exists():
        print(f"error: {args.wordnet}/data.noun not found; install WordNet 3.0 "
              "(apt-get install wordnet-base) or pass --wordnet", file=sys.stderr)
        return 2
    classes = build(args.wordnet)
    text = "[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in classes) + "\n]\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(classes)} classes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
