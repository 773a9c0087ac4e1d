"""Long-range dependency analysis: RECL, loss by context and by position, synthetic recall tasks, speed,
the Table 6 ablation rows and the reports of all of them.

Works on any checkpoint: nothing here imports ``transformer_xl.training`` (training the ablation rows is
``transformer_xl.training.ablation.run_ablation``). Every loop over segments goes through
:class:`transformer_xl.runner.SegmentRunner` (directly or via :func:`transformer_xl.evaluate`), and
the span is an argument everywhere.
"""

from .ablation import (
    ABLATION_ROWS,
    AblationRow,
    ablation_report,
    ablation_table,
    count_parameters,
    equal_parameters,
    row_config,
    row_configs,
    train_attention,
)
from .context import (
    ContextLosses,
    PositionLosses,
    context_losses,
    context_method,
    context_span,
    fingerprint_model,
    loss_by_position,
)
from .recl import DEFAULT_RATIOS, GainCurve, RECLResult, group_baseline, recl, relative_gain, top_r_positions
from .report import (
    context_grid,
    write_context_outputs,
    write_position_outputs,
    write_recl_outputs,
    write_speed_outputs,
)
from .runs import GroupRECL, check_vocabulary, default_name, load_for_data, recl_of_checkpoints, split_tokens
from .speed import SpeedRow, eval_speed, speed_table
from .synthetic import SyntheticTask, accuracy_by_distance, kv_recall_task, lag_copy_task, recall_accuracy

__all__ = [
    "ABLATION_ROWS", "AblationRow", "ContextLosses", "DEFAULT_RATIOS", "GainCurve", "GroupRECL", "PositionLosses",
    "RECLResult", "SpeedRow", "SyntheticTask", "ablation_report", "ablation_table", "accuracy_by_distance",
    "check_vocabulary", "context_grid", "context_losses", "context_method", "context_span", "count_parameters",
    "default_name", "equal_parameters", "eval_speed", "fingerprint_model", "group_baseline", "kv_recall_task",
    "lag_copy_task", "load_for_data", "loss_by_position", "recall_accuracy", "recl", "recl_of_checkpoints",
    "relative_gain", "row_config", "row_configs", "speed_table", "split_tokens", "top_r_positions",
    "train_attention", "write_context_outputs", "write_position_outputs", "write_recl_outputs",
    "write_speed_outputs",
]
