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
from .data.vocab import Vocabulary
from .evaluation import EvalResult, evaluate, score_tokens, sliding_window_evaluate
from .generation import Generation, Generator, generate, generate_batch, generate_text
from .kernels import apply_device_kernels
from .model import Memory, TransformerXLLM, XLOutput
from .pretrained import load_pretrained, save_pretrained
from .runner import SegmentRunner
from .runtime import load_checkpoint, resolve_span
from .tokenizer import Tokenizer, load_model_and_tokenizer, load_tokenizer
from .training import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "EvalResult", "Generation", "Generator", "Memory", "ModelConfig",
    "OptimConfig", "PRESET_NAMES", "RunConfig", "SegmentRunner", "Span", "Tokenizer", "TrainConfig", "TrainResult",
    "TransformerXLError", "TransformerXLLM", "Vocabulary", "XLOutput", "__version__", "apply_device_kernels",
    "evaluate", "generate", "generate_batch", "generate_text", "load_checkpoint", "load_model_and_tokenizer",
    "load_pretrained", "load_tokenizer", "preset_eval_span", "resolve_span", "save_pretrained", "score_tokens",
    "sliding_window_evaluate", "train",
]
