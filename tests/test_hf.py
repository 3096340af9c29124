"""Hugging Face layout: write -> read equals the model, the q/k permutation preserves RoPE attention, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.errors import ModelError
from workbench.model.config import ModelConfig
from workbench.model.hf import permute_rows, read_hf, unpermute_rows, write_hf
from workbench.model.load import load_model, random_model

DENSE = ModelConfig("dense", dim=64, hidden_dim=172, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=100, seq_len=64)
MOE = ModelConfig("moe", dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, seq_len=64,
                  tied_embeddings=False, n_experts=4, n_experts_used=2)


@pytest.mark.parametrize("fmt", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("cfg", [DENSE, MOE, ModelConfig(**{**DENSE.__dict__, "tied_embeddings": False})],
                         ids=["tied", "moe", "untied"])
def test_write_read_identical(tmp_path, cfg, fmt):
    model = random_model(cfg, fmt=fmt, seed=1)
    write_hf(tmp_path / "hf", model)
    back = read_hf(tmp_path / "hf")
    assert back.config == model.config
    assert sorted(back.tensors) == sorted(model.tensors)
    for name, t in model.tensors.items():
        b = back.tensors[name]
        assert (b.fmt, b.shape) == (t.fmt, t.shape) and np.array_equal(b.data, t.data), name
    assert load_model(tmp_path / "hf").config == model.config
    assert read_hf(tmp_path / "hf" / "model.safetensors").config == model.config


def test_hf_names_and_unpermuted_rows_on_disk(tmp_path):
    from safetensors.numpy import load_file

    model = random_model(MOE, seed=2)
    write_hf(tmp_path, model)
    hf = load_file(tmp_path / "model.safetensors")  # the reference reader agrees with ours
    assert np.array_equal(hf["model.layers.1.block_sparse_moe.experts.3.w2.weight"],
                          model.f32("blk.1.ffn_down_exps.weight")[3])
    assert np.array_equal(hf["model.layers.0.block_sparse_moe.gate.weight"], model.f32("blk.0.ffn_gate_inp.weight"))
    q = model.f32("blk.0.attn_q.weight")
    assert np.array_equal(permute_rows(hf["model.layers.0.self_attn.q_proj.weight"], 4), q)
    assert json.loads((tmp_path / "config.json").read_text())["num_local_experts"] == 4


def test_permutation_matches_llama_cpp_and_inverts():
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of head_dim 8
    expected = w.reshape(2, 2, 4, 3).swapaxes(1, 2).reshape(16, 3)  # llama.cpp convert_hf_to_gguf permute
    assert np.array_equal(permute_rows(w, 2), expected)
    assert np.array_equal(unpermute_rows(permute_rows(w, 2), 2), w)
    assert not np.array_equal(permute_rows(w, 2), w)


def _rope_hf(x, pos, theta=10000.0):  # rotate-half: pairs (i, i + d/2)
    d = x.shape[-1]
    f = pos * theta ** (-np.arange(d // 2) * 2 / d)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * np.cos(f) - b * np.sin(f), b * np.cos(f) + a * np.sin(f)], axis=-1)


def _rope_gguf(x, pos, theta=10000.0):  # adjacent pairs (2i, 2i + 1)
    d = x.shape[-1]
    f = pos * theta ** (-np.arange(d // 2) * 2 / d)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * np.cos(f) - b * np.sin(f), b * np.cos(f) + a * np.sin(f)
    return out


def test_permuted_weights_give_the_same_attention_scores():
    rng = np.random.default_rng(3)
    n_head, head_dim, dim = 4, 16, 32
    wq, wk = rng.standard_normal((2, n_head * head_dim, dim))
    x1, x2 = rng.standard_normal((2, dim))
    hf = [(_rope_hf((wq @ x1).reshape(n_head, -1), 5) * _rope_hf((wk @ x2).reshape(n_head, -1), 2)).sum(-1)]
    gq, gk = permute_rows(wq, n_head), permute_rows(wk, n_head)
    gg = (_rope_gguf((gq @ x1).reshape(n_head, -1), 5) * _rope_gguf((gk @ x2).reshape(n_head, -1), 2)).sum(-1)
    assert np.allclose(hf[0], gg)
    unpermuted = (_rope_gguf((wq @ x1).reshape(n_head, -1), 5) * _rope_gguf((wk @ x2).reshape(n_head, -1), 2)).sum(-1)
    assert not np.allclose(hf[0], unpermuted)


def _write_raw(path, header: dict, data: bytes) -> None:
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + data)


@pytest.fixture
def folder(tmp_path):
    write_hf(tmp_path, random_model(DENSE, seed=4))
    return tmp_path


def test_bad_safetensors(folder):
    st = folder / "model.safetensors"
    good = st.read_bytes()
    st.write_bytes(good[:4])
    with pytest.raises(ModelError, match="truncated"):
        read_hf(folder)
    st.write_bytes((1 << 50).to_bytes(8, "little") + good[8:])
    with pytest.raises(ModelError, match="runs past the end"):
        read_hf(folder)
    _write_raw(st, {"model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 1 << 30]}}, b"\0" * 256)
    with pytest.raises(ModelError, match=r"model\.norm\.weight: data_offsets"):
        read_hf(folder)
    _write_raw(st, {"model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}},
               np.full(64, np.nan, np.float32).tobytes())
    with pytest.raises(ModelError, match="NaN"):
        read_hf(folder)
    _write_raw(st, {"model.layers.0.mlp.fancy.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    with pytest.raises(ModelError, match="not a LLaMA"):
        read_hf(folder)
    st.write_bytes((5).to_bytes(8, "little") + b"{nope")
    with pytest.raises(ModelError, match="JSON"):
        read_hf(folder)


def test_bad_config(folder):
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["hidden_size"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="config.json: hidden_size: missing"):
        read_hf(folder)
    cfg["hidden_size"] = "64"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="hidden_size: expected int"):
        read_hf(folder)
    cfg["hidden_size"] = 64
    cfg["intermediate_size"] = 100
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"ffn_gate\.weight: expected shape \(100, 64\)"):
        read_hf(folder)
