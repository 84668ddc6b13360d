"""`python -m synscale.prompts STRATEGY [--classes NAME ...] [--n N] [--json]`:
preview the prompts a strategy gives, the ones images 0..N-1 of each class get."""
from __future__ import annotations

import argparse
import json
import sys

from synscale.prompts import STRATEGIES, PromptOptions, build_pools, pick
from synscale.prompts.classes import class_list, find
from synscale.prompts.word2sen import DEFAULT_MODEL, DEFAULT_TEMPLATE, Word2Sen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synscale.prompts", description=__doc__.split("\n")[1])
    p.add_argument("strategy", help=f"one of: {', '.join(STRATEGIES)}")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="classes by CLIP name, WordNet name or wnid (default: the first 5)")
    p.add_argument("--class-list", default="imagenet-1k",
                   help="imagenet-1k, digits, or a file with one wnid or name per line")
    p.add_argument("--n", type=int, default=5, help="prompts per class (images 0..N-1)")
    p.add_argument("--seed", type=int, default=0, help="the study seed")
    p.add_argument("--word2sen-model", default=DEFAULT_MODEL, help="local folder or Hugging Face id")
    p.add_argument("--word2sen-template", default=DEFAULT_TEMPLATE)
    p.add_argument("--captions", default="", help="in-captions: the captions file")
    p.add_argument("--json", action="store_true", help="print {class name: [prompts]}")
    args = p.parse_args(argv)
    if args.strategy not in STRATEGIES:
        p.error(f"unknown strategy {args.strategy!r}; available: {', '.join(STRATEGIES)}")
    if args.n < 1:
        p.error(f"--n {args.n}: must be at least 1")
    try:
        everything = class_list(args.class_list)
        chosen = [find(everything, q) for q in args.classes] if args.classes else list(everything[:5])
        options = PromptOptions(Word2Sen(args.word2sen_model, args.word2sen_template), args.captions)
        pools = build_pools(args.strategy, chosen, options, args.seed).prompts
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shown = {c.clip_name: [pick(pools[c.index], args.seed, c.index, i) for i in range(args.n)]
             for c in chosen}
    if args.json:
        print(json.dumps(shown, ensure_ascii=False))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.strategy} (seed {args.seed})")
    table.add_column("class")
    table.add_column("distinct", justify="right")
    table.add_column("prompts")
    for c in chosen:
        table.add_row(c.clip_name, str(len(set(pools[c.index]))), "\n".join(shown[c.clip_name]))
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
