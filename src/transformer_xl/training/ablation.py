"""Train the rows of the paper's Table 6 ablation and compare them (``txl ablate``, as a Python API).

    from transformer_xl import ModelConfig, TrainConfig
    from transformer_xl.training.ablation import run_ablation

    result = run_ablation("data/enwik8", "runs/ablate", base=ModelConfig.preset("tiny", n_token=204),
                          train_config=TrainConfig(max_steps=300, batch_size=8), split="valid",
                          max_tokens=4000, contexts=[32, 64, 96, 128])
    print(result.table)

Each row (see :mod:`transformer_xl.analysis.ablation`) is trained with the same data, steps, batch and
segment length, then scores the split at every context of the grid; the group's RECL is added. A row
already trained with exactly this config in ``out/ROW`` is reused; another run there is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..analysis.ablation import (
    ABLATION_ROWS,
    ablation_report,
    ablation_table,
    add_recl,
    check_grid,
    row_configs,
    row_summary,
)
from ..analysis.context import ContextLosses, context_losses
from ..analysis.recl import DEFAULT_RATIOS, RECLResult, recl
from ..analysis.report import context_grid, write_recl_outputs
from ..analysis.runs import load_for_data, open_data, split_tokens
from ..config import ModelConfig, OptimConfig, RunConfig, Span, TrainConfig, TransformerXLError
from ..runtime import load_run_config, resolve_checkpoint, resolve_device, resolve_span
from .checkpoint import load_training_state
from .loop import train

__all__ = ["AblationResult", "finished_run", "run_ablation"]


@dataclass
class AblationResult:
    """The rows' summaries (Table 6 with RECL), the curves and RECL they came from, and where they are."""

    rows: list[dict[str, Any]]
    contexts: list[int]
    spans: dict[str, Span]  # the span each row was scored with (mem_len, same_length set per context)
    level: str | None
    training_tokens: int
    curves: list[ContextLosses]
    recl: RECLResult
    table: str
    out: Path

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "contexts": self.contexts, "level": self.level,
                "training_tokens": self.training_tokens,
                "spans": {row: span.to_dict() for row, span in self.spans.items()}}


def finished_run(run_dir: str | Path, config: RunConfig) -> bool:
    """True when ``run_dir`` holds a finished run of exactly ``config`` (an ablation rerun reuses it);
    False when it holds none yet; an error when it holds another run."""
    run_dir = Path(run_dir)
    if not (run_dir / "last").exists():
        return False
    last = resolve_checkpoint(run_dir / "last")
    saved = load_run_config(last)
    if saved is None or saved.to_dict() != config.to_dict():
        raise TransformerXLError(f"{run_dir} holds another run than this ablation row; choose another --out")
    return int(load_training_state(last)["step"]) >= config.train.max_steps


def run_ablation(data: Any, out: str | Path, *, base: ModelConfig | None = None, preset: str = "tiny",
                 rows: Sequence[str] = tuple(ABLATION_ROWS), train_config: TrainConfig | None = None,
                 optim_config: OptimConfig | None = None, split: str = "test", max_tokens: int = 0,
                 contexts: Sequence[int] | None = None, start: int | None = None, step: int | None = None,
                 max_context: int | None = None, seg_len: int | None = None, clamp_len: int | None = None,
                 ratios: Sequence[float] = DEFAULT_RATIOS, batch_size: int = 8, cache_dir: str | Path | None = None,
                 device: Any = "auto", progress: bool | None = False,
                 log: Callable[[str], None] | None = print) -> AblationResult:
    """Train every row of ``rows`` into ``out/ROW``, score ``split`` at the context grid, compute RECL.

    ``data``: a prepared directory. ``base``: the model every row starts from (default: ``preset``);
    its n_token is set to the data's vocabulary. ``train_config`` / ``optim_config``: shared by all
    rows (TensorBoard off unless given). The grid: ``contexts``, or start, start + step, ...,
    max_context (default: multiples of the base seg_len); it must include every row's training
    attention length. ``seg_len`` / ``clamp_len`` override the span rows are scored with (see
    :func:`transformer_xl.runtime.resolve_span`). Writes out/ablation.json, out/report.md and
    out/recl/; ``log`` gets one line per row (None: quiet).
    """
    say = log or (lambda text: None)
    out = Path(out)
    prepared = open_data(data)
    tokens = split_tokens(prepared, split, max_tokens)
    n_token = len(prepared.vocab)
    base = base.replace(n_token=n_token) if base is not None else ModelConfig.preset(preset, n_token=n_token)
    train_config = train_config if train_config is not None else TrainConfig(tensorboard=False)
    optim_config = optim_config if optim_config is not None else OptimConfig()
    configs = row_configs(base, rows)
    grid = context_grid([base.seg_len], contexts=contexts, start=start, step=step, max_context=max_context)
    check_grid(configs, grid, len(tokens) - 1)
    device = resolve_device(device) if isinstance(device, str) else device
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"

    summaries, curves, spans = [], [], {}
    for row, config in configs.items():
        run_dir = out / row
        say(f"== {row}: attn_type {config.attn_type}, mem_len {config.mem_len}, d_inner {config.d_inner}")
        run_config = RunConfig(model=config, optim=optim_config, train=train_config)
        if finished_run(run_dir, run_config):
            say(f"   {run_dir} already holds this run: reusing it")
        else:
            train(run_config, data=prepared.path, out=run_dir, progress=progress)
        loaded = load_for_data(run_dir, prepared, device=device)
        spans[row] = resolve_span(loaded.model.config, loaded.saved_eval, seg_len=seg_len, clamp_len=clamp_len)
        say(f"   scored with span {spans[row].describe()} (mem_len = each context c, same_length on)")
        curve = context_losses(loaded.model, tokens, grid, span=spans[row], batch_size=batch_size, cache_dir=cache,
                               name=row, device=device, progress=progress)
        curves.append(curve)
        summaries.append(row_summary(row, config, curve, params=loaded.model.num_parameters()))
    result = recl({c.name: c.as_mapping() for c in curves}, ratios=ratios)
    add_recl(summaries, result)
    write_recl_outputs(out / "recl", result, curves, title="RECL of the ablation rows")
    level = prepared.vocab.kind
    tokens_trained = train_config.max_steps * train_config.batch_size * base.seg_len
    report = ablation_report(summaries, result.ratios, level, data=prepared.path, split=split,
                             steps=train_config.max_steps, batch_size=train_config.batch_size, seg_len=base.seg_len,
                             n_tokens=len(tokens) - 1, contexts=grid)
    (out / "report.md").write_text(report, encoding="utf-8")
    ablation = AblationResult(rows=summaries, contexts=grid, spans=spans, level=level, training_tokens=tokens_trained,
                              curves=curves, recl=result, table=ablation_table(summaries, result.ratios, level),
                              out=out)
    (out / "ablation.json").write_text(json.dumps(ablation.to_dict(), indent=1) + "\n", encoding="utf-8")
    return ablation
