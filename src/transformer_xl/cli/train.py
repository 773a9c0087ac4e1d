"""`txl train`: train a Transformer-XL on a prepared corpus.

    txl train --data data/enwik8 --out runs/enwik8 --preset enwik8-base
    txl train --data data/pystdlib --out runs/demo --config configs/demo.toml --train.max_steps 500
    txl train --data data/pystdlib --out runs/demo --resume --train.max_steps 1000   # continue exactly

Values come from, lowest first: the defaults, --preset (or `preset = "..."` in the TOML), the
value-only TOML --config ([model], [optim], [train], [eval] tables), then --section.field flags.
model.n_token is taken from the data's vocabulary. With --resume the saved run config is the base, and
the model and batch layout must stay as they were. Multi-process (DDP) training runs under torchrun:

    torchrun --nproc_per_node 8 --no-python txl train --data DATA --out RUN ...
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        --no-python txl train --data DATA --out RUN ...     # on every node, node_rank 0, 1, ...

train.batch_size is the global batch: each process reads batch_size / processes whole streams.
train.streams says how they are read: ordered (contiguous segments of model.seg_len), varlen (the paper's
variable-length segments around model.seg_len), sentences (lm1b: whole sentences, shuffled every epoch), or
auto (the default: sentences for a sentence-level corpus such as lm1b, else ordered).

Faults: SIGTERM or SIGINT (preemption, Ctrl-C) saves last/ at the end of the current step and exits
with status 128 + the signal number; --resume then continues exactly. A non-finite loss or gradient
skips the step (train.nan_policy=skip|stop|ignore); train.max_bad_steps in a row stop the run with
status 2. Under torchrun with --max-restarts, a restarted job resumes from last/ by itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import (
    PRESET_NAMES,
    ConfigError,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    TransformerXLError,
    load_toml,
    preset_eval_span,
)
from .flags import add_config_flags, add_subcommand, merge_section, overrides, toml_section

SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig}


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "train", help="train a model (resumable, DDP under torchrun)",
                            description=__doc__,
                            usage="txl train --data DATA --out RUN [--preset NAME] [--config FILE.toml] [--resume] "
                                  "[--seed N] [--json] [--SECTION.FIELD VALUE ...]")
    parser.add_argument("--data", required=True, help="prepared data directory (txl prepare --out)")
    parser.add_argument("--out", required=True, help="run directory: last/, best/, metrics.jsonl")
    parser.add_argument("--preset", help=f"model preset: {', '.join(PRESET_NAMES)}")
    parser.add_argument("--config", help="value-only TOML run file")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    parser.add_argument("--seed", type=int, help="same as --train.seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    for section, cls in SECTIONS.items():
        add_config_flags(parser, section, cls)
    parser.set_defaults(func=run)


def resolve_config(args: argparse.Namespace, *, n_token: int) -> RunConfig:
    """The run config from the saved run (with --resume), preset, TOML and flags, in that order."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if args.resume:
        from ..runtime import load_run_config, resolve_checkpoint

        try:
            saved = load_run_config(resolve_checkpoint(Path(args.out) / "last"))
        except TransformerXLError:
            saved = None  # train() says there is nothing to resume
        if saved is not None:
            sections = {name: dict(values) for name, values in saved.to_dict().items()}
    toml: dict[str, Any] = load_toml(args.config) if args.config else {}
    unknown = sorted(set(toml) - set(SECTIONS) - {"preset"})
    if unknown:
        raise ConfigError(f"{args.config}: unknown key(s) {unknown}; use preset and the tables "
                          f"{', '.join(f'[{s}]' for s in SECTIONS)}")
    preset = args.preset or toml.get("preset")
    if preset is not None:
        sections["model"].update(ModelConfig.preset(str(preset)).to_dict())
        if not args.resume:  # the span the released scripts evaluate this preset with
            sections["eval"].update(preset_eval_span(str(preset)).to_dict())
    flag_values = {name: overrides(args, name) for name in SECTIONS}
    if args.seed is not None:
        flag_values["train"]["seed"] = args.seed
    explicit_n_token = "n_token" in toml_section(toml, "model", args.config) or "n_token" in flag_values["model"]
    for name in SECTIONS:
        sections[name] = merge_section(sections[name], toml_section(toml, name, args.config), flag_values[name])
    if not explicit_n_token:
        sections["model"]["n_token"] = n_token  # the vocabulary decides, whatever the preset says
    return RunConfig.from_dict(sections)


def run(args: argparse.Namespace) -> int:
    from ..runtime import elastic_restart_count, resolve_checkpoint, torchrun_env
    from ..training import load_data, train

    data = load_data(args.data)
    if data.vocab is None:
        raise TransformerXLError(f"{args.data} has no vocabulary")
    if not args.resume and elastic_restart_count() > 0:
        # torchrun restarted the workers after a failure: continue from last/ when the first attempt saved one
        try:
            resolve_checkpoint(Path(args.out) / "last")
            args.resume = True
        except TransformerXLError:
            pass
    config = resolve_config(args, n_token=len(data.vocab))
    result = train(config, data=data, out=args.out, resume=args.resume,
                   progress=False if args.no_progress else None)
    summary = {"out": str(args.out), "step": result.step, "valid_loss": result.valid_loss,
               "best_valid_loss": result.best_valid_loss, "stopped_early": result.stopped_early,
               "interrupted": result.interrupted, "skipped_steps": result.skipped_steps,
               "last_train_loss": result.losses[-1] if result.losses else None}
    rank, _, _ = torchrun_env()
    if rank == 0:
        stopped = f" (stopped by {result.interrupted or 'train.max_time'})" if result.stopped_early else ""
        lines = [f"trained to step {result.step}{stopped}"]
        if result.valid_loss is not None:
            lines.append(f"valid loss {result.valid_loss:.4f} (best {result.best_valid_loss:.4f})")
        lines.append(f"checkpoints: {Path(args.out) / 'last'}, {Path(args.out) / 'best'}")
        print("\n".join(lines))
        if args.json:
            print(json.dumps(summary))
        sys.stdout.flush()
    if result.interrupted is not None:  # a scheduler must see that the run did not finish
        import signal

        return 128 + int(getattr(signal, result.interrupted, signal.SIGTERM))
    return 0
