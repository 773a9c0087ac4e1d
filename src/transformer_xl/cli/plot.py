"""`txl plot`: training and validation loss of one or more runs, against steps and tokens, as a PNG.

    txl plot runs/demo                        # -> runs/demo/loss.png
    txl plot runs/a runs/b --out compare.png  # runs overlaid, one colour each

Reads each run's metrics.jsonl (and run.json from last/ or best/ for the tokens per step: batch_size x
seg_len). Needs matplotlib, an optional extra: in a git clone, `.venv/bin/pip install -e '.[plot]'`.
TensorBoard is another option for live curves: `txl train` also logs there when the tensorboard package
is installed (`.venv/bin/pip install tensorboard`, then `tensorboard --logdir RUN/tensorboard`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import TransformerXLError
from .flags import add_subcommand

INSTALL_HINT = "in a git clone: .venv/bin/pip install -e '.[plot]' (or pip install matplotlib)"


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "plot", help="plot train/valid loss of runs (PNG; matplotlib extra)",
                            description=__doc__, usage="txl plot RUN [RUN ...] [--out FILE.png]")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (txl train --out)")
    parser.add_argument("--out", help="the PNG to write (default: RUN/loss.png for one run, loss.png for several)")
    parser.set_defaults(func=run)


def read_curves(run_dir: str | Path) -> dict[str, Any]:
    """A run's curves from metrics.jsonl: {"name", "train": [(step, loss)], "valid": [(step, loss)],
    "tokens_per_step": int or None}. A torn last line (a killed run) is skipped."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise TransformerXLError(f"{run_dir} has no metrics.jsonl: pass a run directory written by txl train --out")
    train, valid = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            continue
        if isinstance(row.get("loss"), (int, float)):
            train.append((row["step"], float(row["loss"])))
        if isinstance(row.get("valid_loss"), (int, float)):
            valid.append((row["step"], float(row["valid_loss"])))
    return {"name": run_dir.name or str(run_dir), "train": train, "valid": valid,
            "tokens_per_step": _tokens_per_step(run_dir)}


def _tokens_per_step(run_dir: Path) -> int | None:
    for name in ("last", "best"):
        path = run_dir / name / "run.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            return int(config["train"]["batch_size"]) * int(config["model"]["seg_len"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise TransformerXLError(f"txl plot needs matplotlib, an optional extra: {INSTALL_HINT}") from None
    return plt


def plot_runs(runs: list[str | Path], out: str | Path) -> Path:
    """Train (solid) and valid (dashed, dots) loss of every run against steps (left) and tokens (right)."""
    curves = [read_curves(r) for r in runs]
    if not any(c["train"] or c["valid"] for c in curves):
        raise TransformerXLError("no loss rows in the runs' metrics.jsonl yet: train for train.log_every steps first")
    plt = _pyplot()
    names = [c["name"] for c in curves]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x: tell them apart by the full path
        names = [str(r) for r in runs]
    figure, (by_step, by_tokens) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (curve, name) in enumerate(zip(curves, names)):
        colour = colours[i % len(colours)]
        scale = curve["tokens_per_step"]
        for axis, factor in ((by_step, 1), (by_tokens, scale)):
            if factor is None:
                continue
            if curve["train"]:
                steps, losses = zip(*curve["train"])
                axis.plot([s * factor for s in steps], losses, color=colour, label=f"{name} train")
            if curve["valid"]:
                steps, losses = zip(*curve["valid"])
                axis.plot([s * factor for s in steps], losses, color=colour, linestyle="--", marker="o",
                          markersize=3, label=f"{name} valid")
    by_step.set_xlabel("optimiser step")
    by_tokens.set_xlabel("training tokens (steps x batch_size x seg_len)")
    for axis in (by_step, by_tokens):
        axis.set_ylabel("loss (nats per token)")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize="small")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def run(args: argparse.Namespace) -> int:
    out = args.out or (str(Path(args.runs[0]) / "loss.png") if len(args.runs) == 1 else "loss.png")
    path = plot_runs(args.runs, out)
    print(f"wrote {path}")
    return 0
