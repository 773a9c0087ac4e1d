"""transformer-xl: Transformer-XL language models with segment-level recurrence and relative positions."""

from .config import ConfigError, EvalLengths, ModelConfig, PRESET_NAMES, TransformerXLError, preset_eval_lengths
from .model import TransformerXLLM, XLOutput

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "EvalLengths", "ModelConfig", "PRESET_NAMES", "TransformerXLError", "TransformerXLLM",
    "XLOutput", "__version__", "preset_eval_lengths",
]
