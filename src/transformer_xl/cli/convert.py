"""`txl convert`: move weights between our format and other Transformer-XL implementations.

    txl convert --from hf --to ours SRC DST        Hugging Face TransfoXL folder or hub id -> our directory
    txl convert --from hf --to ours transfo-xl/transfo-xl-wt103 models/wt103
    txl convert --from ours --to hf SRC DST        ours (checkpoint or run directory) -> a directory
                                                   TransfoXLLMHeadModel loads
    txl convert --from original|nvidia --to ours SRC.pt DST --unsafe-pickle

Nothing from SRC is executed: safetensors and JSON are read as data, a pytorch_model.bin with
``weights_only=True``, Hugging Face's vocab.pkl / vocab.bin through an unpickler that turns every object
it names into inert data and keeps only the symbol list. A hub id (owner/name) is fetched with
huggingface_hub (only the config, weights and vocabulary files; HF_HUB_OFFLINE=1 uses the cache only).
Original/NVIDIA checkpoints are pickles of whole objects; they are read only with ``--unsafe-pickle``,
through an unpickler that refuses every class outside an allow-list.

The vocabulary travels exactly (kind, every symbol, order, special tokens, normalisation): to a Hugging
Face directory as our vocab.json, plus vocab.txt when TransfoXLTokenizer can read it the same way.
Its size must equal the model's n_token.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import TransformerXLError

SOURCES = ("hf", "original", "nvidia", "ours")
TARGETS = ("ours", "hf")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert weights between Hugging Face / original / NVIDIA checkpoints and ours",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", choices=SOURCES, required=True,
                        help="format of SRC: a Hugging Face TransfoXL directory, the original release's or "
                             "NVIDIA's .pt checkpoint, or a directory written by save_pretrained")
    parser.add_argument("--to", dest="target", choices=TARGETS, required=True,
                        help="format to write: our directory (config.json + model.safetensors) or Hugging Face's")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="allow reading an original/NVIDIA pickle (only classes on an allow-list are built); "
                             "use only for files you trust")
    parser.add_argument("--force", action="store_true", help="write into DST even if it is not empty")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) when SRC is a hub id")
    parser.add_argument("--cache-dir", type=Path, help="Hugging Face hub cache folder (default: huggingface_hub's)")
    parser.add_argument("src", metavar="SRC", help="source folder, checkpoint or run directory, or hub id")
    parser.add_argument("dst", type=Path, metavar="DST")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.vocab import check_vocab_size
    from ..interop import hf
    from ..interop.hf_vocab import load_hf_vocabulary, write_hf_vocabulary
    from ..interop.hub import resolve_hf_source
    from ..pretrained import check_torch_file, load_pretrained, load_vocabulary, save_pretrained
    from ..runtime import resolve_checkpoint

    if args.dst.exists() and (not args.dst.is_dir() or (any(args.dst.iterdir()) and not args.force)):
        raise TransformerXLError(f"{args.dst} exists and is not an empty directory; choose another DST or "
                                 "pass --force")
    if args.source in ("original", "nvidia") and Path(args.src).is_file():
        check_torch_file(Path(args.src))  # code (TorchScript) is refused whatever the flags: say so first
    if args.source in ("original", "nvidia") and not args.unsafe_pickle:
        raise TransformerXLError(
            f"{args.source} checkpoints are pickles that could run code when loaded; re-run with "
            f"--unsafe-pickle if you trust {args.src} (only allow-listed classes are built)")
    if args.source == "hf":
        src = resolve_hf_source(args.src, revision=args.revision, cache_dir=args.cache_dir)
        model = hf.import_hf(src)
        vocab = load_hf_vocabulary(src)
    elif args.source == "ours":
        src = resolve_checkpoint(args.src)  # a checkpoint, or a run directory's best/ (else last/)
        model = load_pretrained(src)
        vocab = load_vocabulary(src)
    else:
        from ..interop import original

        src = Path(args.src)
        model = original.import_original(src, flavour=args.source, unsafe_pickle=True)
        vocab = None
    check_vocab_size(vocab, model.config.n_token, source=src)  # before anything is written
    if args.target == "ours":
        save_pretrained(model, args.dst, vocab=vocab)
    else:
        hf.export_hf(model, args.dst)
        if vocab is not None:
            write_hf_vocabulary(vocab, args.dst)
    described = "" if vocab is None else (f", with its {vocab.kind} vocabulary"
                                          + ("" if vocab.normalization == "none" else
                                             f" ({vocab.normalization} tokenization)"))
    print(f"wrote {args.dst} ({args.target}) from {src}: {model.num_parameters():,} parameters, "
          f"{model.config.n_layer} layers, vocabulary {model.config.n_token}{described}")
    return 0
