"""The `txl` command. Each subcommand lives in its own module with ``register(subparsers)``.

User mistakes (TransformerXLError) print one line on stderr and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ..config import TransformerXLError

# Subcommand modules, in the order `txl --help` lists them.
SUBCOMMANDS = ("prepare", "train", "eval", "score", "generate", "convert", "recl", "ablate", "analyze", "plot")


def _version() -> str:
    """The installed distribution's version (pip install -e . in a git clone installs it too)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-xl")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="txl", description="Transformer-XL: train, evaluate, analyse and run long-context language models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "threads"):  # every compute command has --threads (cli/flags.add_threads_flag)
            from .flags import apply_threads

            apply_threads(args)
        result = args.func(args)
    except TransformerXLError as exc:
        print(f"txl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"txl {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:
        # sizes a user asked for (d_model, batch, lengths) that this machine cannot hold: one line, not a dump
        text = " ".join(str(exc).split())
        if not isinstance(exc, MemoryError) and not any(k in text for k in ("out of memory", "can't allocate")):
            raise
        print(f"txl {args.command}: error: out of memory ({text[:200]}); use smaller sizes, lengths or batch",
              file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
