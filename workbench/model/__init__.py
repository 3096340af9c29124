"""Models: configs, quantized tensors, file formats, tokenizers and the float reference."""

from .config import ModelConfig
from .tensor import Model, QTensor

__all__ = ["ModelConfig", "Model", "QTensor"]
