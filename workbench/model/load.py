"""Load a model from a bundled name or a path in any format we read, and change its weight precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import resolve
from ..errors import ModelError, WorkbenchError
from ..precision import WEIGHT_FORMAT
from .config import ModelConfig
from .quant import dequantize, quantize
from .tensor import Model, QTensor

MODEL_SUFFIXES = (".gguf", ".bin", ".safetensors")


def load_model(name_or_path: str | Path, *, tokenizer: str | Path | None = None) -> Model:
    """A bundled name (models/<name>.gguf), a .gguf, a llama2.c .bin, or a Hugging Face folder / .safetensors.

    ``tokenizer``: a llama2.c tokenizer.bin to attach (replaces any tokenizer the file holds).
    """
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        from .hf import read_hf

        model = read_hf(path)
    else:
        try:
            path = resolve("models", name_or_path, MODEL_SUFFIXES)
        except WorkbenchError as exc:
            raise ModelError(str(exc)) from None
        suffix = path.suffix.lower()
        if suffix == ".gguf":
            from .gguf_io import read_gguf

            model = read_gguf(path)
        elif suffix == ".bin":
            try:
                from .llama2c import read_llama2c
            except ModuleNotFoundError as exc:
                raise ModelError(f"reading llama2.c checkpoints needs {exc.name}, which is missing", source=path) from None
            return read_llama2c(path, tokenizer)
        elif suffix == ".safetensors":
            from .hf import read_hf

            model = read_hf(path)
        else:
            raise ModelError(f"expected a .gguf, .bin or .safetensors file or a folder, found '{suffix}'", source=path)
    if tokenizer is not None:
        try:
            from .tokenizer import Tokenizer
        except ModuleNotFoundError as exc:
            raise ModelError(f"reading a tokenizer needs {exc.name}, which is missing", source=tokenizer) from None
        model.tokenizer = Tokenizer.from_llama2c(tokenizer, model.config.vocab_size)
    return model


def convert_precision(model: Model, precision: str) -> Model:
    """A copy of ``model`` whose matrices (2-D and up, token_embd included) are stored in ``precision``'s format.

    Norm vectors and the MoE router (``ffn_gate_inp``, tiny and range-sensitive: the chip runs it in fp32)
    stay f32. Tensors already in the target format are kept as they are.
    """
    if precision not in WEIGHT_FORMAT:
        raise ModelError(f"unknown precision {precision!r}; expected one of {', '.join(WEIGHT_FORMAT)}")
    fmt = WEIGHT_FORMAT[precision]
    tensors: dict[str, QTensor] = {}
    for name, qt in model.tensors.items():
        if len(qt.shape) < 2 or name.endswith("ffn_gate_inp.weight"):
            tensors[name] = qt if qt.fmt == "f32" else quantize(dequantize(qt), "f32")
        elif qt.fmt == fmt:
            tensors[name] = qt
        else:
            tensors[name] = quantize(dequantize(qt), fmt)
    return Model(config=model.config, tensors=tensors, tokenizer=model.tokenizer, source=model.source,
                 metadata=dict(model.metadata))


def random_model(cfg: ModelConfig, *, seed: int = 0, fmt: str = "f32", scale: float = 0.05) -> Model:
    """A model of shape ``cfg`` with normal(0, scale) weights (norms near 1), for tests and demos."""
    from .gguf_io import expected_shapes

    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(cfg).items():
        if len(shape) == 1:
            tensors[name] = quantize(1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32), "f32")
        else:
            tensors[name] = quantize(scale * rng.standard_normal(shape, dtype=np.float32), fmt)
    return Model(config=cfg, tensors=tensors)
