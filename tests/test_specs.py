"""Shape specs: every bundled spec loads, its parameter count matches the published size, bad specs fail clearly."""

from __future__ import annotations

import pytest

from workbench.errors import ModelError
from workbench.model.config import ModelConfig
from workbench.model.gguf_io import write_gguf
from workbench.model.load import random_model
from workbench.model.specs import load_spec, spec_names

PUBLISHED = {  # (parameters, tolerance): published sizes
    "llama-2-70b": (70e9, 0.03),
    "llama-3.1-70b": (70e9, 0.03),
    "llama-3.3-70b": (70e9, 0.03),
    "llama-3.1-8b": (8e9, 0.05),
    "llama-3.1-405b": (405e9, 0.03),
    "mixtral-8x7b": (46.7e9, 0.03),
    "mistral-7b": (7.24e9, 0.03),
    "gemma-7b": (8.54e9, 0.03),
}


def test_all_specs_bundled():
    assert set(PUBLISHED) <= set(spec_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published(name):
    cfg = load_spec(name)
    target, tol = PUBLISHED[name]
    assert abs(cfg.n_params() - target) <= tol * target, cfg.n_params()
    assert cfg.name == name and cfg.q_dim == cfg.n_heads * cfg.head_dim


def test_spec_details():
    mix = load_spec("mixtral-8x7b")
    assert (mix.n_experts, mix.n_experts_used, mix.hidden_dim) == (8, 2, 14336)
    assert load_spec("llama-3.1-405b").kv_dim == 8 * 128
    assert load_spec("gemma-7b").head_dim == 256 and load_spec("gemma-7b").tied_embeddings


GOOD = """[model]
name = "x"
dim = 64
hidden_dim = 128
n_layers = 2
n_heads = 8
n_kv_heads = 4
vocab_size = 100
seq_len = 64
tied_embeddings = true
[source]
shapes = "test"
"""


@pytest.mark.parametrize("edit, match", [
    (("n_layers = 2", "n_layer = 2"), r"model\.n_layer: unknown key; did you mean 'n_layers'"),
    (("n_layers = 2\n", ""), r"model\.n_layers: missing required key"),
    (("dim = 64", 'dim = "64"'), r"model\.dim: expected int"),
    (("n_kv_heads = 4", "n_kv_heads = 3"), r"model\.n_kv_heads: expected a divisor"),
    (("seq_len = 64", "seq_len = 0"), r"model\.seq_len: expected 1\.\."),
    (("[source]", "[sources]"), r"sources: unknown table.*did you mean 'source'"),
    (("tied_embeddings = true", "tied_embeddings = true\nn_experts = 8"), r"n_experts_used"),
    (("dim = 64", "dim = 64 oops"), r"not valid TOML"),
])
def test_bad_specs(tmp_path, edit, match):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(ModelError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_good_spec_and_model_files(tmp_path):
    (tmp_path / "x.toml").write_text(GOOD)
    cfg = load_spec(tmp_path / "x.toml")
    assert cfg == ModelConfig("x", 64, 128, 2, 8, 4, 100, 64)
    write_gguf(tmp_path / "m.gguf", random_model(cfg, fmt="q8_0"))
    assert load_spec(tmp_path / "m.gguf") == cfg


def test_unknown_name_suggests():
    with pytest.raises(ModelError, match="did you mean 'llama-3.1-70b'"):
        load_spec("llama-3.1-70")
