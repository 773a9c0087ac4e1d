"""`txl convert`: move weights between our format and other Transformer-XL implementations.

    txl convert --from hf --to ours SRC DST        Hugging Face TransfoXL folder or hub id -> our directory
    txl convert --from hf --to ours transfo-xl/transfo-xl-wt103 models/wt103
    txl convert --from ours --to hf SRC DST        ours (checkpoint or run directory) -> a directory
                                                   TransfoXLLMHeadModel loads
    txl convert --from original|nvidia --to ours SRC.pt DST --unsafe-pickle
    txl convert --from tf --to ours pretrained_xl/tf_wt103/model DST --preset wt103-large
                                                   the original release's TensorFlow checkpoints (no
                                                   TensorFlow needed); --vocab FILE adds a vocabulary

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
from .flags import add_span_flags, span_flags

SOURCES = ("hf", "original", "nvidia", "ours", "tf")
TARGETS = ("ours", "hf")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert weights between Hugging Face / original / NVIDIA checkpoints and ours",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", choices=SOURCES, required=True,
                        help="format of SRC: a Hugging Face TransfoXL directory, the original release's or "
                             "NVIDIA's .pt checkpoint, a directory written by save_pretrained, or the original "
                             "release's TensorFlow checkpoint (a prefix, its .index file or its folder)")
    parser.add_argument("--to", dest="target", choices=TARGETS, required=True,
                        help="format to write: our directory (config.json + model.safetensors) or Hugging Face's")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="allow reading an original/NVIDIA pickle (only classes on an allow-list are built); "
                             "use only for files you trust")
    parser.add_argument("--force", action="store_true", help="write into DST even if it is not empty")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) when SRC is a hub id")
    parser.add_argument("--cache-dir", type=Path, help="Hugging Face hub cache folder (default: huggingface_hub's)")
    tf_group = parser.add_argument_group("--from tf (the original release's TensorFlow checkpoints)")
    tf_group.add_argument("--preset", help="the released model it is (enwik8-large, text8-large, wt103-large, "
                                           "lm1b-large): checked against the shapes; sets the paper's evaluation "
                                           "lengths and the training dropout")
    tf_group.add_argument("--vocab", type=Path, metavar="FILE",
                          help="vocabulary to save with it (vocab.json, or one symbol a line in the model's id order)")
    add_span_flags(parser)  # --seg-len ... --same-length: the lengths saved in config.json (--from tf)
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

    tf_only = [flag for flag, value in (("--preset", args.preset), ("--vocab", args.vocab)) if value is not None]
    tf_only += ["--" + k.replace("_", "-") for k, v in span_flags(args).items() if v is not None]
    if tf_only and args.source != "tf":
        raise TransformerXLError(f"{', '.join(tf_only)} only apply to --from tf")
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
    elif args.source == "tf":
        from ..data.vocab import Vocabulary
        from ..interop.tf import import_tf

        src = Path(args.src)
        vocab = Vocabulary.load(args.vocab) if args.vocab is not None else None
        model, skipped = import_tf(src, preset=args.preset, **span_flags(args))
        if skipped:
            print(f"skipped {len(skipped)} training-state variables (Adam slots, global_step, beta powers)")
        if vocab is None:
            print("no --vocab given: the converted model has no vocabulary (its ids are the original's)")
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
