"""Build the English language models (models.lm) for a model's token set: into the cache folder that decoding reads
(what the first stream with an LM would otherwise do, ~25 s of one core), or into a folder of your own.

    python -m tools.build_lm                          # both LMs, for the bundled handwriting model, into the cache
    python -m tools.build_lm --lm chars --out /tmp/lm --words 5000

Why a cache and not models/bundled/: the character 6-gram over 50,000 words is 14 MB of ARPA text and the lexicon
with its unigram LM 6 MB, past the 5 MB that may be bundled; wordfreq (a locked dependency) ships the word list in
its wheel, so any machine builds the same files without a download.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from models.checkpoint import load_checkpoint
from models.lm import LM_NAMES, Recipe, build, ensure


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="handwriting", help="the model whose token set the LMs spell with")
    p.add_argument("--lm", nargs="+", default=list(LM_NAMES), choices=LM_NAMES)
    p.add_argument("--out", help="folder to write to (default: the cache folder decoding reads, models.lm.ensure)")
    p.add_argument("--words", type=int, help=f"most frequent words taken (default {Recipe.words})")
    args = p.parse_args(argv)
    tokenizer = load_checkpoint(args.model, "cpu").tokenizer
    recipe = replace(Recipe(), words=args.words) if args.words else Recipe()
    if not args.out and recipe != Recipe():
        raise SystemExit("rnnstream: error: --words: the cache holds the default recipe only; give --out too")
    for name in args.lm:
        t0 = time.process_time()
        made = build(name, tokenizer, Path(args.out) / name, recipe) if args.out else ensure(name, tokenizer)
        sizes = ", ".join(f"{path} {path.stat().st_size / 1e6:.1f} MB" for path in made.values())
        print(f"{name}: {sizes} ({time.process_time() - t0:.1f} s of CPU)")


if __name__ == "__main__":
    main()
