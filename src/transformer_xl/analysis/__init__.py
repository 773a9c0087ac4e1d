"""Long-range dependency analysis: RECL, loss by context and by position, synthetic recall tasks, speed.

Works on any checkpoint: nothing here imports ``transformer_xl.training``.
"""

from .context import ContextLosses, PositionLosses, context_losses, context_method, fingerprint_model, loss_by_position
from .recl import DEFAULT_RATIOS, GainCurve, RECLResult, group_baseline, recl, relative_gain, top_r_positions
from .speed import SpeedRow, eval_speed, speed_table
from .synthetic import SyntheticTask, accuracy_by_distance, kv_recall_task, lag_copy_task, recall_accuracy

__all__ = [
    "DEFAULT_RATIOS", "ContextLosses", "GainCurve", "PositionLosses", "RECLResult", "SpeedRow", "SyntheticTask",
    "accuracy_by_distance", "context_losses", "context_method", "eval_speed", "fingerprint_model",
    "group_baseline", "kv_recall_task", "lag_copy_task", "loss_by_position", "recall_accuracy", "recl",
    "relative_gain", "speed_table", "top_r_positions",
]
