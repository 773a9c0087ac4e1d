"""transformer-xl: Transformer-XL language models with segment-level recurrence and relative positions.

The public API, re-exported from the modules that own it (see ../shared/DESIGN.md section 3).
"""

from .config import (
                     PRESET_NAMES,
                     ConfigError,
                     DataConfig,
                     EvalConfig,
                     EvalLengths,
                     ModelConfig,
                     OptimConfig,
                     RunConfig,
                     TrainConfig,
                     TransformerXLError,
                     preset_eval_lengths,
)
from .evaluation import EvalResult, evaluate, sliding_window_evaluate
from .generation import generate
from .model import TransformerXLLM, XLOutput
from .pretrained import load_pretrained, save_pretrained
from .training import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "EvalLengths", "EvalResult", "ModelConfig", "OptimConfig",
    "PRESET_NAMES", "RunConfig", "TrainConfig", "TrainResult", "TransformerXLError", "TransformerXLLM",
    "XLOutput", "__version__", "evaluate", "generate", "load_pretrained", "preset_eval_lengths",
    "save_pretrained", "sliding_window_evaluate", "train",
]
