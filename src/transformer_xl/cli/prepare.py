"""`txl prepare`: build a corpus's vocabulary and encoded cache.

    txl prepare --corpus wikitext-103 --path ~/data/wikitext-103 --out data/wt103
    txl prepare --corpus enwik8 --path ~/data/enwik8.zip --out data/enwik8
    txl prepare --corpus text --path 'notes/**/*.md' --level word --min-freq 3 --out data/notes
    txl prepare --corpus pystdlib --level byte --out data/pystdlib   # no download needed

Prints tokens per split, the vocabulary size and the out-of-vocabulary rate; ``--json`` also prints them
as one JSON object on the last line. Re-running with the same inputs reuses the cache. One process at a
time prepares an --out (a second one stops with "OUT is in use by process N").
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import DATA_CORPORA, DATA_LEVELS, DataConfig


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prepare", help="build the vocabulary and encoded cache of a corpus",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=DATA_CORPORA, required=True, help="which corpus format to read")
    parser.add_argument("--path", help="the corpus files: a folder, file, zip or glob (not needed for pystdlib)")
    parser.add_argument("--out", help="directory for vocab.json, {train,valid,test}.npy, meta.json "
                                      "(default: data/CORPUS)")
    parser.add_argument("--level", choices=DATA_LEVELS, help="byte, char or word (default: the corpus's own)")
    parser.add_argument("--min-freq", type=int, default=1, help="drop words seen fewer times in train (-> <unk>)")
    parser.add_argument("--max-vocab", type=int, help="at most this many symbols, special tokens included")
    parser.add_argument("--lower", action="store_true", help="lower-case the text first")
    parser.add_argument("--errors", choices=("strict", "replace"), default="strict",
                        help="invalid UTF-8: stop with its byte offset (strict) or substitute U+FFFD (replace)")
    parser.add_argument("--valid-fraction", type=float, default=0.05, help="text/pystdlib: share of valid")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="text/pystdlib: share of test")
    parser.add_argument("--vocab", dest="vocab_file", help="use this vocabulary (vocab.json or one symbol a line)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.cache import prepare_corpus

    config = DataConfig(corpus=args.corpus, path=args.path, out=args.out, level=args.level, min_freq=args.min_freq,
                        max_vocab=args.max_vocab, lower=args.lower, errors=args.errors,
                        valid_fraction=args.valid_fraction, test_fraction=args.test_fraction,
                        vocab_file=args.vocab_file) if args.path or args.corpus == "pystdlib" else None
    if config is None:  # let the reader say what the corpus expects and where to get it
        from ..data.corpora import resolve_corpus

        resolve_corpus(args.corpus, None)
        raise AssertionError("unreachable")  # pragma: no cover
    from ..locks import DirectoryLock

    with DirectoryLock(config.out_dir, what="data directory"):  # two prepares on one --out would mix their files
        prepared = prepare_corpus(config.corpus, config.path, config.out_dir, level=config.level,
                                  min_freq=config.min_freq, max_vocab=config.max_vocab, lower=config.lower,
                                  errors=config.errors, progress=not args.no_progress,
                                  valid_fraction=config.valid_fraction, test_fraction=config.test_fraction,
                                  vocab_file=config.vocab_file, force=args.force)
    print(prepared.summary())
    if args.json:
        splits = {name: {"tokens": info["tokens"], "oov": info["oov"],
                         "oov_rate": info["oov"] / info["tokens"] if info["tokens"] else 0.0}
                  for name, info in prepared.meta["splits"].items()}
        print(json.dumps({"out": str(prepared.path), "corpus": prepared.corpus, "level": prepared.level,
                          "vocab_size": len(prepared.vocab), "splits": splits}))
    return 0
