"""llama2.c checkpoints: write -> read identity, the real stories260K file, and every malformed file -> ModelError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.errors import ModelError
from workbench.model.config import ModelConfig
from workbench.model.llama2c import HEADER_BYTES, read_llama2c, write_llama2c
from workbench.model.tensor import Model, QTensor


def random_llama2c_model(tied: bool, seed: int = 0) -> Model:
    """A small llama2.c-shaped f32 model (GQA: 4 query heads over 2 kv heads) with random weights."""
    cfg = ModelConfig(name="tiny", dim=16, hidden_dim=40, n_layers=2, n_heads=4, n_kv_heads=2,
                      vocab_size=37, seq_len=12, tied_embeddings=tied)
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (cfg.vocab_size, cfg.dim), "output_norm.weight": (cfg.dim,)}
    if not tied:
        shapes["output.weight"] = (cfg.vocab_size, cfg.dim)
    for i in range(cfg.n_layers):
        shapes.update({
            f"blk.{i}.attn_norm.weight": (cfg.dim,),
            f"blk.{i}.attn_q.weight": (cfg.q_dim, cfg.dim),
            f"blk.{i}.attn_k.weight": (cfg.kv_dim, cfg.dim),
            f"blk.{i}.attn_v.weight": (cfg.kv_dim, cfg.dim),
            f"blk.{i}.attn_output.weight": (cfg.dim, cfg.q_dim),
            f"blk.{i}.ffn_norm.weight": (cfg.dim,),
            f"blk.{i}.ffn_gate.weight": (cfg.hidden_dim, cfg.dim),
            f"blk.{i}.ffn_up.weight": (cfg.hidden_dim, cfg.dim),
            f"blk.{i}.ffn_down.weight": (cfg.dim, cfg.hidden_dim),
        })
    tensors = {n: QTensor("f32", s, rng.standard_normal(s).astype(np.float32)) for n, s in shapes.items()}
    return Model(config=cfg, tensors=tensors)


def _one_line_error(path, match: str) -> ModelError:
    with pytest.raises(ModelError, match=match) as info:
        read_llama2c(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return info.value


@pytest.mark.parametrize("tied", [True, False])
def test_write_read_identity(tmp_path, tied):
    model = random_llama2c_model(tied)
    path = tmp_path / "tiny.bin"
    write_llama2c(path, model)
    back = read_llama2c(path)
    assert back.config == model.config
    assert set(back.tensors) == set(model.tensors)
    for name, t in model.tensors.items():
        got = back.tensors[name]
        assert got.fmt == "f32" and got.shape == t.shape
        np.testing.assert_array_equal(got.data, t.data, err_msg=name)
    header = np.fromfile(path, dtype="<i4", count=7)
    assert header[5] == (37 if tied else -37)


def test_stories260k_reads_and_rewrites_byte_for_byte(stories260k, tmp_path):
    model = read_llama2c(stories260k)
    cfg = model.config
    assert (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size, cfg.seq_len) == (
        64, 172, 5, 8, 4, 512, 512)
    assert cfg.tied_embeddings and "output.weight" not in model.tensors
    assert model.tensors["blk.4.attn_k.weight"].shape == (32, 64)
    assert model.tensors["blk.0.ffn_down.weight"].shape == (64, 172)
    out = tmp_path / "again.bin"
    write_llama2c(out, model)
    a = np.fromfile(stories260k, dtype=np.uint8)
    b = np.fromfile(out, dtype=np.uint8)
    assert a.size == b.size
    # everything but freq_cis (2 * seq_len * head_dim/2 floats at the end) is the same bytes;
    # freq_cis is recomputed in numpy and agrees with the exporter's to float32 rounding
    freq_bytes = 2 * 512 * 4 * 4
    np.testing.assert_array_equal(a[:-freq_bytes], b[:-freq_bytes])
    np.testing.assert_allclose(a[-freq_bytes:].view("<f4"), b[-freq_bytes:].view("<f4"), atol=1e-7)


def test_with_tokenizer(stories260k, llama2c_tokenizer):
    model = read_llama2c(stories260k, llama2c_tokenizer)
    assert model.tokenizer.vocab_size == 512  # run.c reads only vocab_size entries of the 32k file


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.bin"
    write_llama2c(path, random_llama2c_model(tied=True))
    return path


def test_truncated(tiny_file):
    data = tiny_file.read_bytes()
    tiny_file.write_bytes(data[:-4])
    _one_line_error(tiny_file, "truncated")
    tiny_file.write_bytes(data[:10])
    _one_line_error(tiny_file, "header")
    tiny_file.write_bytes(b"")
    _one_line_error(tiny_file, "header")


def test_trailing_bytes(tiny_file):
    tiny_file.write_bytes(tiny_file.read_bytes() + b"\0\0\0\0")
    _one_line_error(tiny_file, "trailing")


def test_untied_flag_changes_expected_size(tiny_file):
    data = bytearray(tiny_file.read_bytes())
    data[20:24] = np.array([-37], dtype="<i4").tobytes()  # claims an untied wcls that is not there
    tiny_file.write_bytes(bytes(data))
    _one_line_error(tiny_file, "truncated.*untied")


@pytest.mark.parametrize("field, value, match", [
    (0, -64, "dim.*found -64"),
    (0, 0, "dim.*found 0"),
    (2, -1, "n_layers"),
    (6, 0, "seq_len"),
    (3, 3, "dim.*multiple of n_heads=3"),
    (4, 3, "n_kv_heads.*divisor"),
    (1, 2_000_000_000, "hidden_dim.*found 2000000000"),
    (5, -(1 << 30), "vocab_size"),
])
def test_bad_header(tiny_file, field, value, match):
    data = bytearray(tiny_file.read_bytes())
    data[4 * field : 4 * field + 4] = np.array([value], dtype="<i4").tobytes()
    tiny_file.write_bytes(bytes(data))
    _one_line_error(tiny_file, match)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_names_the_tensor(tmp_path, bad):
    model = random_llama2c_model(tied=False)
    model.tensors["blk.1.attn_k.weight"].data[3, 5] = bad
    path = tmp_path / "bad.bin"
    write_llama2c(path, model)
    err = _one_line_error(path, "blk.1.attn_k.weight")
    assert err.key == "blk.1.attn_k.weight" and "finite" in str(err)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        read_llama2c(tmp_path / "absent.bin")
    with pytest.raises(ModelError, match="directory"):
        read_llama2c(tmp_path)


def test_write_refuses_non_f32(tmp_path):
    model = random_llama2c_model(tied=True)
    t = model.tensors["blk.0.attn_q.weight"]
    model.tensors["blk.0.attn_q.weight"] = QTensor("f16", t.shape, t.data.astype(np.float16))
    with pytest.raises(ModelError, match="f32.*found f16"):
        write_llama2c(tmp_path / "x.bin", model)
    assert not (tmp_path / "x.bin").exists()


@given(header=st.lists(st.one_of(st.integers(-3, 40), st.integers(-(2**31), 2**31 - 1)), min_size=7, max_size=7),
       tail_floats=st.integers(0, 4096))
def test_any_header_is_a_model_or_one_model_error(tmp_path_factory, header, tail_floats):
    path = tmp_path_factory.mktemp("fuzz") / "f.bin"
    path.write_bytes(np.array(header, dtype="<i4").tobytes() + np.ones(tail_floats, dtype="<f4").tobytes())
    try:
        model = read_llama2c(path)
    except ModelError as exc:
        assert "\n" not in str(exc)
    else:
        assert path.stat().st_size == HEADER_BYTES + 4 * tail_floats
        assert model.weight_bytes <= 4 * tail_floats
