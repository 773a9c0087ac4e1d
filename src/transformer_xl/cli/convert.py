"""`txl convert`: move weights between our format and other Transformer-XL implementations.

    txl convert --from hf --to ours SRC DST        Hugging Face TransfoXL directory -> our directory
    txl convert --from ours --to hf SRC DST        ours -> a directory TransfoXLLMHeadModel loads
    txl convert --from original|nvidia --to ours SRC.pt DST --unsafe-pickle

Nothing from SRC is executed: safetensors and JSON are read as data, a pytorch_model.bin with
``weights_only=True``. Original/NVIDIA checkpoints are pickles of whole objects; they are read only with
``--unsafe-pickle``, through an unpickler that refuses every class outside an allow-list.
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
    parser.add_argument("src", type=Path, metavar="SRC")
    parser.add_argument("dst", type=Path, metavar="DST")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..interop import hf
    from ..pretrained import load_pretrained, load_vocabulary, save_pretrained

    if args.dst.exists() and (not args.dst.is_dir() or (any(args.dst.iterdir()) and not args.force)):
        raise TransformerXLError(f"{args.dst} exists and is not an empty directory; choose another DST or "
                                 "pass --force")
    if args.source in ("original", "nvidia") and not args.unsafe_pickle:
        raise TransformerXLError(
            f"{args.source} checkpoints are pickles that could run code when loaded; re-run with "
            f"--unsafe-pickle if you trust {args.src} (only allow-listed classes are built)")
    if args.source == "hf":
        model = hf.import_hf(args.src)
        vocab = _vocab_from_text(args.src)
    elif args.source == "ours":
        model = load_pretrained(args.src)
        vocab = load_vocabulary(args.src)
    else:
        from ..interop import original

        model = original.import_original(args.src, flavour=args.source, unsafe_pickle=True)
        vocab = None
    if args.target == "ours":
        save_pretrained(model, args.dst, vocab=vocab)
    else:
        hf.export_hf(model, args.dst, vocab_symbols=None if vocab is None else list(vocab.symbols))
    print(f"wrote {args.dst} ({args.target}): {model.num_parameters():,} parameters, "
          f"{model.config.n_layer} layers, vocabulary {model.config.n_token}"
          + (", with its vocabulary" if vocab is not None else ""))
    return 0


def _vocab_from_text(directory: Path) -> Any | None:
    """A Hugging Face directory's text vocabulary (vocab.txt) as our Vocabulary; vocab.pkl is never read."""
    path = directory / "vocab.txt"
    if not path.exists():
        return None
    from ..data.vocab import Vocabulary

    return Vocabulary.load(path)
