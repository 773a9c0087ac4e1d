"""transformer-xl: Transformer-XL language models with segment-level recurrence and relative positions.

The public API, re-exported from the modules that own it (see docs/DESIGN.md).
"""

from .config import (
                     PRESET_NAMES,
                     ConfigError,
                     DataConfig,
                     EvalConfig,
                     ModelConfig,
                     OptimConfig,
                     RunConfig,
                     Span,
                     TrainConfig,
                     TransformerXLError,
                     preset_eval_span,
)
from .evaluation import EvalResult, evaluate, score_tokens, sliding_window_evaluate
from .generation import Generator, generate
from .kernels import apply_device_kernels
from .model import Memory, TransformerXLLM, XLOutput
from .pretrained import load_pretrained, save_pretrained
from .runner import SegmentRunner
from .runtime import load_checkpoint, resolve_span
from .training import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "EvalResult", "Generator", "Memory", "ModelConfig", "OptimConfig",
    "PRESET_NAMES", "RunConfig", "SegmentRunner", "Span", "TrainConfig", "TrainResult", "TransformerXLError",
    "TransformerXLLM", "XLOutput", "__version__", "apply_device_kernels", "evaluate", "generate",
    "load_checkpoint", "load_pretrained", "preset_eval_span", "resolve_span", "save_pretrained", "score_tokens",
    "sliding_window_evaluate", "train",
]
