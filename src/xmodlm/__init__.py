"""xmodlm: X-Mod modular multilingual transformers, pre-trained with per-language modules."""

from .config import PRESETS, XmodConfig, preset
from .model import (
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodModel,
)
from .kernels import use_onednn
from .runtime import tune_allocator

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "XmodConfig",
    "XmodForMaskedLM",
    "XmodForMultipleChoice",
    "XmodForQuestionAnswering",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodModel",
    "use_onednn",
    "preset",
    "tune_allocator",
]
