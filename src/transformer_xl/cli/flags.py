"""Command-line flags generated from the config dataclasses: ``--model.n_layer 12``, ``--train.max_steps``.

Each field's trailing comment in config.py becomes its ``--help`` text. Flags default to "not given",
so only what the user typed overrides the preset / TOML values. Subcommand parsers get one-line errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from typing import Any, Callable, Mapping, Sequence

from ..config import ConfigError


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null", "") else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def _tuple_of(parse: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse_tuple(text: str) -> tuple[Any, ...]:
        return tuple(parse(part) for part in text.split(",") if part.strip())

    parse_tuple.__name__ = "comma-separated list"
    return parse_tuple


_SCALARS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, bool: _parse_bool}


def _parser_for(annotation: Any) -> Callable[[str], Any]:
    """A string parser for one field type: scalars, X | None, tuple[X, ...]."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _optional(_parser_for(inner[0]))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _tuple_of(_parser_for(args[0]))
    raise TypeError(f"no command-line parser for {annotation!r}")


def field_help(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the class source, as help text."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # pragma: no cover - source unavailable (frozen build)
        return {}
    out = {}
    for match in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.M):
        out.setdefault(match.group(1), _list_choices(match.group(2).strip()))
    return out


def _list_choices(text: str) -> str:
    """Spell out a "one of NAME" reference to a tuple constant of config.py as its values."""
    constants = vars(sys.modules[ConfigError.__module__])  # transformer_xl.config

    def spell(match: re.Match[str]) -> str:
        values = constants.get(match.group(1))
        if not isinstance(values, tuple) or not all(isinstance(v, str) for v in values):
            return match.group(0)
        return "one of " + ", ".join(values)

    text = re.sub(r"one of ([A-Z][A-Z_]+)(?::[^()]*$)?", spell, text)
    return text


def add_config_flags(parser: argparse.ArgumentParser, section: str, cls: type, *,
                     skip: Sequence[str] = ()) -> None:
    """Add ``--section.field`` for every field of dataclass ``cls`` (except ``skip``)."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    group = parser.add_argument_group(f"{section} options (override the preset and --config)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        text = helps.get(f.name, "")
        text = (f"{text} (default: {default!r})" if text else f"default: {default!r}").replace("%", "%%")
        group.add_argument(f"--{section}.{f.name}", dest=f"{section}.{f.name}", type=_parser_for(hints[f.name]),
                           default=argparse.SUPPRESS, metavar=f.name.upper(), help=text)


def overrides(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The ``--section.field`` values the user gave, as {field: value}."""
    prefix = section + "."
    return {key[len(prefix):]: value for key, value in vars(args).items() if key.startswith(prefix)}


def merge_section(base: Mapping[str, Any], *layers: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for layer in layers:
        if layer:
            out.update(layer)
    return out


def toml_section(data: Mapping[str, Any], name: str, path: Any) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return dict(value)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make a subcommand parser report a bad or unknown flag as one line on stderr, exit status 2."""

    def error(message: str) -> typing.NoReturn:
        sys.stderr.write(f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")
        sys.exit(2)

    original = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = original(args, namespace)
        if extras:  # argparse would hand these to the top-level parser, which prints a usage block
            error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    return parser


# The span flags: the same four on every command that runs a checkpoint ----------------------------------
SPAN_HELP = ("span: each flag overrides the run's saved evaluation setting (run.json [eval], e.g. a preset's "
             "published span), which overrides the training value (config.json)")


def add_span_flags(parser: argparse.ArgumentParser, *, fields: Sequence[str] = ("seg_len", "mem_len", "clamp_len",
                                                                               "same_length")) -> None:
    """--seg-len, --mem-len, --clamp-len, --same-length/--no-same-length (those in ``fields``), all "not given"
    by default, for :func:`span_flags` and :func:`transformer_xl.runtime.resolve_span`."""
    group = parser.add_argument_group(SPAN_HELP)
    helps = {"seg_len": "tokens per segment", "mem_len": "memory length (0: no recurrence)",
             "clamp_len": "relative distances beyond this share one encoding (<= 0: no clamping)",
             "same_length": "every query attends to the same number of keys"}
    for name in fields:
        flag = "--" + name.replace("_", "-")
        if name == "same_length":
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=helps[name])
        else:
            group.add_argument(flag, dest=name, type=int, default=None, help=helps[name])


def span_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The span flags as keyword arguments of resolve_span (None: not given)."""
    return {name: getattr(args, name, None) for name in ("seg_len", "mem_len", "clamp_len", "same_length")}


# Threads: the same flag on every command that computes -----------------------------------------------------
def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    """--threads N: torch CPU threads (default: the CPUs this process may use, shared by torchrun's local
    processes). Read it back with :func:`apply_threads`."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: the CPUs this process may use; on a machine "
                             "that other jobs share, fewer threads can be much faster, e.g. --threads 1)")


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's thread count from --threads (or its default); the count."""
    from ..runtime import set_threads

    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    return set_threads(threads)


def add_context_flags(parser: argparse.ArgumentParser, *, data: bool = True) -> None:
    """The flags of a loss-by-context analysis (txl recl, ablate, analyze context)."""
    if data:
        parser.add_argument("--data", required=True, help="prepared data directory (the models' vocabulary)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--max-tokens", type=int, default=0, help="score only the first N tokens (0: all)")
    parser.add_argument("--contexts", nargs="+", type=int, help="context lengths c (evenly spaced)")
    parser.add_argument("--start", type=int, help="smallest context (default: the smallest training seg_len)")
    parser.add_argument("--step", type=int, help="step Delta between contexts (default: the same)")
    parser.add_argument("--max-context", type=int, help="largest context (default: start + 5 steps)")
    add_span_flags(parser, fields=("seg_len", "clamp_len"))  # mem_len and same_length are set per context
    parser.add_argument("--batch-size", type=int, default=8, help="parallel streams / windows (default 8)")
    parser.add_argument("--cache", help="per-token loss cache (default: OUT/cache)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_threads_flag(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")


def grid_flags(args: argparse.Namespace) -> dict[str, Any]:
    """--contexts / --start / --step / --max-context as keyword arguments of analysis.context_grid."""
    return {"contexts": args.contexts, "start": args.start, "step": args.step, "max_context": args.max_context}


def add_subcommand(subparsers: Any, name: str, *, help: str, description: str | None,
                   usage: str | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=description, allow_abbrev=False, usage=usage,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    return one_line_errors(parser)
