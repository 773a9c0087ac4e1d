"""`txl train`: train a Transformer-XL on a prepared corpus.

    txl train --data data/enwik8 --out runs/enwik8 --preset enwik8-base
    txl train --data data/pystdlib --out runs/demo --config configs/demo.toml --train.max_steps 500
    txl train --data data/pystdlib --out runs/demo --resume --train.max_steps 1000   # continue exactly

Values come from, lowest first: the defaults, --preset (or `preset = "..."` in the TOML), the
value-only TOML --config ([model], [optim], [train], [eval] tables), then --section.field flags.
model.n_token is taken from the data's vocabulary. With no preset and no model settings at all, the model
is sized to the device: on a CPU char-small (byte/char data) or word-small (word data), with optim.lr 1e-3
and 100 warmup steps (flags and TOML still override them); on a GPU the 42M-parameter default.

The run directory has one owner: a second `txl train` (or anything else taking its lock) on the same
--out stops with "RUN is in use by process N". A fresh run refuses an --out that holds an earlier run's
last/, best/ or metrics.jsonl: --resume continues it, --overwrite deletes them first. --resume on a
directory without last/ yet starts the run (and says so), so a job script can always pass it.

With --resume the saved run config is the base, and the model and batch layout must stay as they were.
Multi-process (DDP) training runs under torchrun:

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
from .flags import add_config_flags, add_subcommand, add_threads_flag, merge_section, overrides, toml_section

SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig}


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "train", help="train a model (resumable, DDP under torchrun)",
                            description=__doc__,
                            usage="txl train --data DATA --out RUN [--preset NAME] [--config FILE.toml] "
                                  "[--resume | --overwrite] [--threads N] [--seed N] [--json] [--SECTION.FIELD V ...]")
    parser.add_argument("--data", required=True, help="prepared data directory (txl prepare --out)")
    parser.add_argument("--out", required=True, help="run directory: last/, best/, metrics.jsonl")
    parser.add_argument("--preset", help=f"model preset: {', '.join(PRESET_NAMES)}")
    parser.add_argument("--config", help="value-only TOML run file")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out exactly from last/; start it when there is no last/ yet")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the earlier run in --out (last/, best/, metrics.jsonl, tensorboard/) and start")
    parser.add_argument("--allow-new-data", action="store_true",
                        help="with --resume: continue even though --data is not the training split the run started on")
    add_threads_flag(parser)
    # a calibration made before training (make demo): steps several times slower get a warning
    parser.add_argument("--expected-step-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help="same as --train.seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    for section, cls in SECTIONS.items():
        add_config_flags(parser, section, cls)
    parser.set_defaults(func=run)


# The optimiser settings of a model chosen for a CPU (the flags and TOML still override them): the paper's
# 2.5e-4 without warmup suits its large models; small ones get to a useful loss in far fewer steps with this.
SMALL_MODEL_OPTIM = {"lr": 1e-3, "warmup_steps": 100, "lr_min": 1e-5}


def device_preset(device_name: str, level: str | None) -> str | None:
    """The preset a run without --preset and without model settings gets: a small one on a CPU (by the
    data's level), None (the 42M-parameter default) on a GPU."""
    from ..runtime import resolve_device

    if resolve_device(device_name).type != "cpu":
        return None
    return "word-small" if level == "word" else "char-small"


def resolve_config(args: argparse.Namespace, *, n_token: int, level: str | None = None) -> RunConfig:
    """The run config from the saved run (with --resume), preset, TOML and flags, in that order."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    saved = None
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
    flag_values = {name: overrides(args, name) for name in SECTIONS}
    if preset is None and saved is None and not toml_section(toml, "model", args.config) and not flag_values["model"]:
        device = merge_section({"device": "auto"}, toml_section(toml, "train", args.config), flag_values["train"])
        preset = device_preset(str(device["device"]), level)
        args.auto_preset = preset
        if preset is not None:  # a small model learns faster at a higher rate than the paper's large ones
            sections["optim"].update(SMALL_MODEL_OPTIM)
    if preset is not None:
        sections["model"].update(ModelConfig.preset(str(preset)).to_dict())
        if not args.resume:  # the span the released scripts evaluate this preset with
            sections["eval"].update(preset_eval_span(str(preset)).to_dict())
    if args.seed is not None:
        flag_values["train"]["seed"] = args.seed
    explicit_n_token = "n_token" in toml_section(toml, "model", args.config) or "n_token" in flag_values["model"]
    for name in SECTIONS:
        sections[name] = merge_section(sections[name], toml_section(toml, name, args.config), flag_values[name])
    if not explicit_n_token:
        sections["model"]["n_token"] = n_token  # the vocabulary decides, whatever the preset says
        user_model = {**toml_section(toml, "model", args.config), **flag_values["model"]}
        cutoffs = tuple(sections["model"].get("cutoffs") or ())
        if preset is not None and "cutoffs" not in user_model and any(c >= n_token for c in cutoffs):
            # a preset's adaptive-softmax clusters beyond this vocabulary: keep those that fit
            sections["model"]["cutoffs"] = [c for c in cutoffs if c < n_token]
            sections["model"]["tie_projs"] = None
    return RunConfig.from_dict(sections)


def run(args: argparse.Namespace) -> int:
    from ..runtime import elastic_restart_count, torchrun_env
    from ..training import load_data, train

    data_dir = Path(args.data)
    if data_dir.is_file():
        raise TransformerXLError(f"--data {args.data} is a file; txl train reads a prepared data directory: run "
                                 f"`txl prepare --corpus text --path {args.data} --out data/NAME` and pass "
                                 "--data data/NAME")
    if not data_dir.exists():
        raise TransformerXLError(f"--data {args.data} does not exist; prepare one with txl prepare --out")
    data = load_data(args.data)
    if data.vocab is None:
        raise TransformerXLError(f"{args.data} has no vocabulary")
    if args.resume and args.overwrite:
        raise TransformerXLError("--resume continues the run in --out and --overwrite deletes it: pass one of them")
    if elastic_restart_count() > 0:  # torchrun restarted the workers: continue from last/ if one was saved
        args.resume = True
    args.auto_preset = None
    config = resolve_config(args, n_token=len(data.vocab), level=data.level)
    rank, _, _ = torchrun_env()
    if args.auto_preset and rank == 0:
        print(f"no --preset: {args.auto_preset}, a model sized for the CPU (--preset or --model.* to choose)",
              file=sys.stderr, flush=True)
    result = train(config, data=data, out=args.out, resume=args.resume, overwrite=args.overwrite,
                   allow_new_data=args.allow_new_data, progress=False if args.no_progress else None,
                   expected_step_seconds=args.expected_step_seconds)
    summary = {"out": str(args.out), "step": result.step, "valid_loss": result.valid_loss,
               "best_valid_loss": result.best_valid_loss, "stopped_early": result.stopped_early,
               "interrupted": result.interrupted, "skipped_steps": result.skipped_steps,
               "last_train_loss": result.losses[-1] if result.losses else None}
    if rank == 0:
        stopped = f" (stopped by {result.interrupted or 'train.max_time'})" if result.stopped_early else ""
        lines = [f"trained to step {result.step}{stopped}"]
        if result.valid_loss is not None:
            lines.append(f"valid loss {result.valid_loss:.4f} (best {result.best_valid_loss:.4f})")
        saved = [str(Path(args.out) / name) for name in ("last", "best") if (Path(args.out) / name).exists()]
        lines.append(f"checkpoints: {', '.join(saved) if saved else 'none'}")
        print("\n".join(lines))
        if args.json:
            print(json.dumps(summary))
        sys.stdout.flush()
    if result.interrupted is not None:  # a scheduler must see that the run did not finish
        import signal

        return 128 + int(getattr(signal, result.interrupted, signal.SIGTERM))
    return 0
