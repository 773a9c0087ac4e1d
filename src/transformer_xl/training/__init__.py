"""Training: the loop, the learning-rate schedule, checkpoints and distributed helpers."""

from .checkpoint import load_model, resolve_checkpoint, save_checkpoint
from .loop import TrainData, TrainResult, load_data, train
from .schedule import learning_rate

__all__ = ["TrainData", "TrainResult", "learning_rate", "load_data", "load_model", "resolve_checkpoint",
           "save_checkpoint", "train"]
