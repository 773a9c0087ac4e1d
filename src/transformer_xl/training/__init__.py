"""Training: the loop, the optimiser and its parameter groups, the learning-rate schedule, checkpoints and
distributed helpers."""

from .ablation import AblationResult, run_ablation
from .checkpoint import save_checkpoint
from .loop import TrainData, TrainResult, load_data, train
from .optim import build_optimizer, parameter_groups
from .schedule import learning_rate

__all__ = ["AblationResult", "TrainData", "TrainResult", "build_optimizer", "learning_rate", "load_data",
           "parameter_groups", "run_ablation", "save_checkpoint", "train"]
