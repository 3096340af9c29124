"""Shape-only model specs (models/*.toml) for projecting big models: a ModelConfig without weights.

A spec has a ``[model]`` table (the ModelConfig fields) and a ``[source]`` table of citations
(strings or lists of strings). ``load_spec`` also accepts a real model file and returns its config.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ..data import bundled_names, did_you_mean, resolve
from ..errors import ModelError, WorkbenchError
from .config import ModelConfig

# key -> (type, required); ints must be >= 1 unless noted in _MIN
_KEYS: dict[str, tuple[type, bool]] = {
    "name": (str, True), "dim": (int, True), "hidden_dim": (int, True), "n_layers": (int, True),
    "n_heads": (int, True), "n_kv_heads": (int, True), "head_dim": (int, False), "vocab_size": (int, True),
    "seq_len": (int, True), "rope_theta": (float, False), "norm_eps": (float, False),
    "tied_embeddings": (bool, True), "n_experts": (int, False), "n_experts_used": (int, False),
}
_MIN = {"n_experts": 0, "n_experts_used": 0}
_MAX_INT = 2**31
SPEC_SUFFIX = ".toml"
_MODEL_FILES = (".gguf", ".bin", ".safetensors")


def spec_names() -> list[str]:
    """Names of the bundled shape specs (models/*.toml)."""
    return bundled_names("models", (SPEC_SUFFIX,))


def load_spec(name_or_path: str | Path) -> ModelConfig:
    """A bundled spec name, a spec .toml, a bundled model name, or a model file/folder -> its ModelConfig."""
    candidate = Path(str(name_or_path)).expanduser()
    if candidate.is_dir():
        from .hf import read_hf

        return read_hf(candidate).config
    try:
        path = resolve("models", name_or_path, (SPEC_SUFFIX,) + _MODEL_FILES)
    except WorkbenchError as exc:
        raise ModelError(str(exc)) from None
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        from .gguf_io import read_gguf_config

        return read_gguf_config(path)
    if suffix in _MODEL_FILES:
        from .load import load_model

        return load_model(path).config
    return parse_spec(path)


MAX_SPEC_BYTES = 1 << 20  # a spec is a dozen keys and citations


def parse_spec(path: Path) -> ModelConfig:
    """Validate a spec file strictly: unknown keys (with a did-you-mean), types, ranges."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size  # read what is there, never a buffer of the cap's size
            raw = fh.read(min(size, MAX_SPEC_BYTES) + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise ModelError(f"expected a spec of at most {MAX_SPEC_BYTES} bytes, found more", source=path)
        doc = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", source=path) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"not valid TOML ({exc})", source=path) from None
    except RecursionError:
        raise ModelError("expected a flat spec, found nesting too deep to parse", source=path) from None
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit
        raise ModelError(f"expected valid TOML values, found one Python cannot read ({exc})", source=path) from None
    for table in doc:
        if table not in ("model", "source"):
            raise ModelError(f"unknown table, expected [model] or [source]{did_you_mean(table, ['model', 'source'])}",
                             source=path, key=table)
    model = doc.get("model")
    if not isinstance(model, dict):
        raise ModelError("missing [model] table", source=path, key="model")
    sources = doc.get("source", {})
    if not isinstance(sources, dict):
        raise ModelError(f"expected a [source] table, found {sources!r}"[:200], source=path, key="source")
    for key, value in sources.items():
        ok = isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise ModelError(f"expected a citation string or list of strings, found {value!r}", source=path,
                             key=f"source.{key}")
    values = {}
    for key, value in model.items():
        if key not in _KEYS:
            raise ModelError(f"unknown key{did_you_mean(key, _KEYS)} (expected one of {', '.join(_KEYS)})",
                             source=path, key=f"model.{key}")
        kind = _KEYS[key][0]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or kind is int and isinstance(value, bool):
            raise ModelError(f"expected {kind.__name__}, found {value!r}", source=path, key=f"model.{key}")
        if kind is int and not _MIN.get(key, 1) <= value <= _MAX_INT:
            raise ModelError(f"expected {_MIN.get(key, 1)}..{_MAX_INT}, found {value}", source=path, key=f"model.{key}")
        if kind is float and not 0 < value < 1e12:
            raise ModelError(f"expected a positive number, found {value}", source=path, key=f"model.{key}")
        values[key] = value
    for key, (_, required) in _KEYS.items():
        if required and key not in values:
            raise ModelError(f"missing required key ({_KEYS[key][0].__name__})", source=path, key=f"model.{key}")
    if values["n_heads"] % values["n_kv_heads"]:
        raise ModelError(f"expected a divisor of n_heads {values['n_heads']}, found {values['n_kv_heads']}",
                         source=path, key="model.n_kv_heads")
    if "head_dim" not in values and values["dim"] % values["n_heads"]:
        raise ModelError(f"dim {values['dim']} is not a multiple of n_heads; give head_dim", source=path,
                         key="model.head_dim")
    experts, used = values.get("n_experts", 0), values.get("n_experts_used", 0)
    if (experts == 0) != (used == 0) or used > experts:
        raise ModelError(f"expected 1 <= n_experts_used <= n_experts (or both 0), found {used} of {experts}",
                         source=path, key="model.n_experts_used")
    return ModelConfig(**values)
