"""The Transformer-XL model: imports only torch and transformer_xl.config; no I/O."""

from .attention import (
                        ATTENTION_CLASSES,
                        AlRfouAbsoluteAttention,
                        AttentionContext,
                        MultiHeadAttention,
                        ShawRelativeAttention,
                        VaswaniAbsoluteAttention,
                        XLRelativeAttention,
                        attention_mask,
                        rel_shift,
)
from .embedding import AdaptiveEmbedding, SinusoidPositionEmbedding
from .memory import KeysValues, Memory, as_memory, update_memory
from .softmax import ProjectedAdaptiveLogSoftmax
from .transformer import TransformerXLLM, XLOutput

__all__ = [
    "ATTENTION_CLASSES", "AdaptiveEmbedding", "AlRfouAbsoluteAttention", "AttentionContext", "KeysValues", "Memory",
    "MultiHeadAttention", "ProjectedAdaptiveLogSoftmax", "ShawRelativeAttention", "SinusoidPositionEmbedding",
    "TransformerXLLM", "VaswaniAbsoluteAttention", "XLOutput", "XLRelativeAttention", "attention_mask",
    "as_memory", "rel_shift", "update_memory",
]
