"""The rows of the paper's Table 6 ablation, matched in parameters, and the report of their results.

Pure functions: no training here (``transformer_xl.training.ablation.run_ablation`` trains the rows and
calls these). Every row starts from one base model config:

    xl              recurrence + Transformer-XL relative encoding
    shaw            recurrence + Shaw et al. relative encoding
    no-recurrence   Transformer-XL relative encoding, trained with mem_len 0
    vanilla         Al-Rfou et al.: learned absolute positions, mem_len 0 (evaluated with a sliding window)

Rows after the first get the d_inner whose parameter count is closest to the first row's (equal
parameters); the training loop gives them the same steps, batch and segments (equal training tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..config import ModelConfig, TransformerXLError
from .context import ContextLosses
from .recl import RECLResult

__all__ = ["ABLATION_ROWS", "AblationRow", "ablation_report", "ablation_table", "add_recl", "check_grid",
           "count_parameters", "equal_parameters", "row_config", "row_configs", "row_summary", "train_attention"]


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 6: the attention variant and whether it trains with memory."""

    name: str
    attn_type: str
    recurrence: bool


ABLATION_ROWS: dict[str, AblationRow] = {row.name: row for row in (
    AblationRow("xl", "xl", True),
    AblationRow("shaw", "shaw", True),
    AblationRow("no-recurrence", "xl", False),
    AblationRow("vanilla", "al-rfou", False),
)}


def row_config(base: ModelConfig, row: str) -> ModelConfig:
    """``base`` as the model of ``row``: its attention type; mem_len 0 (and no same_length) without recurrence."""
    if row not in ABLATION_ROWS:
        raise TransformerXLError(f"unknown ablation row {row!r}; choose from {', '.join(ABLATION_ROWS)}")
    spec = ABLATION_ROWS[row]
    return base.replace(attn_type=spec.attn_type, mem_len=base.mem_len if spec.recurrence else 0,
                        same_length=base.same_length if spec.recurrence else False)


def count_parameters(config: ModelConfig) -> int:
    """Trainable parameters of a model built from ``config`` (tied ones counted once)."""
    from ..model import TransformerXLLM

    return TransformerXLLM(config).num_parameters()


def equal_parameters(config: ModelConfig, target: int) -> ModelConfig:
    """``config`` with the d_inner whose parameter count is closest to ``target`` (counts are linear in it)."""
    low, high = count_parameters(config.replace(d_inner=1)), count_parameters(config.replace(d_inner=2))
    per_unit = high - low
    d_inner = max(1, round(1 + (target - low) / per_unit))
    return config.replace(d_inner=d_inner)


def row_configs(base: ModelConfig, rows: Sequence[str] = tuple(ABLATION_ROWS)) -> dict[str, ModelConfig]:
    """The model config of each row, every row after the first matched to the first's parameter count."""
    if not rows:
        raise TransformerXLError("no ablation rows to train")
    if len(set(rows)) != len(rows):
        raise TransformerXLError(f"ablation rows repeat: {list(rows)}")
    if base.mem_len == 0 and any(ABLATION_ROWS[r].recurrence for r in rows if r in ABLATION_ROWS):
        raise TransformerXLError("the recurrent rows need --model.mem_len > 0")
    configs: dict[str, ModelConfig] = {}
    target = None
    for row in rows:
        config = row_config(base, row)
        if target is None:
            target = count_parameters(config)
            configs[row] = config
        else:
            configs[row] = equal_parameters(config, target)
    return configs


def train_attention(config: ModelConfig) -> int:
    """Tokens a prediction saw in training: memory (or the segment) for recurrent rows, the segment otherwise."""
    return max(config.seg_len, config.mem_len) if config.mem_len > 0 else config.seg_len


def check_grid(configs: Mapping[str, ModelConfig], grid: Sequence[int], n_tokens: int) -> None:
    """Every row's training attention length is on the grid, and the tokens reach the longest context."""
    for row, config in configs.items():
        if train_attention(config) not in grid:
            raise TransformerXLError(f"row {row} trained with attention length {train_attention(config)}, which "
                                     f"is not among the contexts {list(grid)}: choose --start/--step to include it")
    if n_tokens <= grid[-1]:
        raise TransformerXLError(f"{n_tokens} tokens scored but the longest context is {grid[-1]}; "
                                 "raise --max-tokens")


def row_summary(row: str, config: ModelConfig, curve: ContextLosses, *, params: int) -> dict[str, Any]:
    """One row's results: loss at its training attention length and at the best longer context."""
    means = curve.mean()
    at_train = train_attention(config)
    best = min((c for c in curve.contexts if c >= at_train), key=lambda c: means[c])
    return {"row": row, "attn_type": config.attn_type, "recurrence": config.mem_len > 0, "params": params,
            "d_inner": config.d_inner, "train_attn_len": at_train, "loss_at_train_len": means[at_train],
            "best_attn_len": best, "best_loss": means[best], "method": curve.method}


def add_recl(rows: list[dict[str, Any]], result: RECLResult) -> list[dict[str, Any]]:
    """Each row's RECL (and whether the grid ended first) for every r, added to its summary in place."""
    for entry in rows:
        entry["recl"] = {str(r): result.recl[r][entry["row"]] for r in result.ratios}
        entry["recl_capped"] = {str(r): result.capped[r][entry["row"]] for r in result.ratios}
    return rows


def _metric(loss: float, level: str | None) -> str:
    return f"{loss / math.log(2):.4f}" if level in ("char", "byte") else f"{math.exp(min(loss, 700.0)):.2f}"


def ablation_table(rows: Sequence[Mapping[str, Any]], ratios: Sequence[float], level: str | None) -> str:
    """Markdown like the paper's Table 6: bpc (character data) or perplexity, and RECL for each r."""
    unit = "bpc" if level in ("char", "byte") else "ppl"
    head = (f"| Row | recurrence | encoding | params | {unit} at train len | best {unit} | attn len | "
            + " | ".join(f"RECL r={r}" for r in ratios) + " |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(ratios)]
    for e in rows:
        lines.append(f"| {e['row']} | {'yes' if e['recurrence'] else 'no'} | {e['attn_type']} | {e['params']:,} | "
                     f"{_metric(e['loss_at_train_len'], level)} ({e['train_attn_len']}) | "
                     f"{_metric(e['best_loss'], level)} | {e['best_attn_len']} | "
                     + " | ".join((">= " if e["recl_capped"][str(r)] else "") + str(e["recl"][str(r)])
                                  for r in ratios) + " |")
    return "\n".join(lines)


def ablation_report(rows: Sequence[Mapping[str, Any]], ratios: Sequence[float], level: str | None, *, data: Any,
                    split: str, steps: int, batch_size: int, seg_len: int, n_tokens: int,
                    contexts: Sequence[int]) -> str:
    """report.md of an ablation: how the rows were made comparable, then the table."""
    tokens_trained = steps * batch_size * seg_len
    return "\n".join([f"# Ablation (paper Table 6) on {data}, split {split}", "",
                      f"Each row: {steps} steps x {batch_size} streams x {seg_len} tokens = {tokens_trained:,} "
                      f"training tokens; parameters matched by d_inner. Scored {n_tokens:,} tokens at contexts "
                      f"{list(contexts)}.", "", ablation_table(rows, ratios, level), ""])
