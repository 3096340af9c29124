"""GGUF write -> read round trips for every format, llama.cpp-compatible bytes, and hostile files."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.errors import ModelError
from workbench.model.config import ModelConfig
from workbench.model.gguf_io import read_gguf, read_gguf_config, write_gguf
from workbench.model.load import convert_precision, load_model, random_model
from workbench.model.quant import FORMATS
from workbench.model.tensor import QTensor

DENSE = ModelConfig("dense", dim=256, hidden_dim=512, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=300,
                    seq_len=128, rope_theta=500000.0, norm_eps=1e-6)
ODD = ModelConfig("odd", dim=64, hidden_dim=172, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=96, seq_len=64)
MOE = ModelConfig("moe", dim=256, hidden_dim=256, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128,
                  seq_len=64, tied_embeddings=False, n_experts=4, n_experts_used=2)


def _same(a: QTensor, b: QTensor) -> bool:
    return a.fmt == b.fmt and a.shape == b.shape and np.array_equal(np.asarray(a.data), np.asarray(b.data))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cfg", [DENSE, MOE, ModelConfig(**{**DENSE.__dict__, "tied_embeddings": False})],
                         ids=["tied", "moe-untied", "untied"])
def test_round_trip_is_identical(tmp_path, fmt, cfg):
    model = random_model(cfg, fmt=fmt, seed=1)
    path = tmp_path / "m.gguf"
    assert write_gguf(path, model) == []
    back = read_gguf(path)
    assert back.config == model.config
    assert list(back.tensors) == list(model.tensors)
    assert all(_same(back.tensors[n], t) for n, t in model.tensors.items())
    assert read_gguf_config(path) == model.config


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "tq2_0", "tq1_0"])
def test_llama_cpp_reader_sees_the_same_tensors(tmp_path, fmt):
    model = random_model(DENSE, fmt=fmt, seed=2)
    write_gguf(tmp_path / "m.gguf", model)
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    by_name = {t.name: t for t in reader.tensors}
    t = by_name["blk.0.attn_q.weight"]
    assert t.tensor_type.name == fmt.upper() and list(t.shape) == [256, 256]  # ne order: cols first
    theirs = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    assert np.array_equal(theirs, model.f32("blk.0.attn_q.weight"))
    assert reader.fields["llama.attention.head_count_kv"].contents() == 4


def test_b1_0_convention_in_file(tmp_path):
    write_gguf(tmp_path / "b.gguf", random_model(ODD, fmt="b1_0"))
    reader = gguf.GGUFReader(tmp_path / "b.gguf")
    t = {t.name: t for t in reader.tensors}["blk.0.ffn_down.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.I8 and list(t.shape) == [6 * 6, 64]  # 172 -> 6 blocks
    assert reader.fields["asicbench.format.blk.0.ffn_down.weight"].contents() == "b1_0"
    assert reader.fields["asicbench.shape.blk.0.ffn_down.weight"].contents() == [64, 172]
    assert _same(read_gguf(tmp_path / "b.gguf").tensors["blk.0.ffn_down.weight"],
                 random_model(ODD, fmt="b1_0").tensors["blk.0.ffn_down.weight"])


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "tq2_0", "tq1_0"])
def test_rows_off_the_block_fall_back_losslessly(tmp_path, fmt):
    model = random_model(ODD, fmt=fmt, seed=3)
    notes = write_gguf(tmp_path / "o.gguf", model)
    odd = [n for n, t in model.tensors.items() if t.fmt == fmt and t.shape[-1] % (256 if fmt.startswith("tq") else 32)]
    assert len(notes) == len(odd) and all(n.split(":")[0] in odd for n in notes)
    back = read_gguf(tmp_path / "o.gguf")
    for name in odd:
        assert back.tensors[name].fmt in ("f16", "f32")
        assert np.array_equal(back.f32(name), model.f32(name))
    precision = {"q8_0": "int8", "q4_0": "int4", "tq2_0": "ternary", "tq1_0": None}[fmt]
    if precision:  # re-quantizing the fallback restores the very same block bytes
        again = convert_precision(back, precision)
        assert all(_same(again.tensors[n], model.tensors[n]) for n in odd)


def test_tokenizer_round_trip(tmp_path):
    tok_mod = pytest.importorskip("workbench.model.tokenizer")
    tok = tok_mod.train_bpe(["the cat sat on the mat", "a dog ran far away"], vocab_size=300)
    model = random_model(ModelConfig(**{**DENSE.__dict__, "vocab_size": tok.vocab_size}), fmt="q8_0")
    model.tokenizer = tok
    write_gguf(tmp_path / "t.gguf", model)
    back = read_gguf(tmp_path / "t.gguf")
    assert back.tokenizer is not None
    assert back.tokenizer.encode("the cat ran") == tok.encode("the cat ran")
    assert gguf.GGUFReader(tmp_path / "t.gguf").fields["tokenizer.ggml.model"].contents() == "llama"


def test_stories260k_through_gguf(tmp_path, stories260k):
    model = load_model(stories260k)
    for precision in ("f32", "int8", "ternary"):
        conv = convert_precision(model, precision)
        write_gguf(tmp_path / f"{precision}.gguf", conv)
        back = read_gguf(tmp_path / f"{precision}.gguf")
        assert back.config.hidden_dim == 172 and back.config.n_kv_heads == 4
        for name in conv.tensors:
            assert np.array_equal(back.f32(name), conv.f32(name)), name


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "m.gguf"
    write_gguf(path, random_model(ODD))
    before = path.read_bytes()
    broken = random_model(ODD)
    broken.tensors["output_norm.weight"] = QTensor("q9_9", (64,), np.zeros(64, np.uint8))
    with pytest.raises(ValueError):
        write_gguf(path, broken)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


# ---- hostile files ----

@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("g") / "good.gguf"
    write_gguf(path, random_model(ODD, fmt="q8_0", seed=4))
    return path.read_bytes()


def _rejects(tmp_path, data: bytes, match: str | None = None) -> str:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(ModelError, match=match) as info:
        read_gguf(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def _tensor_info_offset(data: bytes, name: str) -> int:
    return data.index(struct.pack("<Q", len(name)) + name.encode())


def test_bad_magic_empty_and_version(tmp_path, good):
    _rejects(tmp_path, b"GGML" + good[4:], "magic")
    _rejects(tmp_path, b"", "magic")
    _rejects(tmp_path, good[:4] + struct.pack("<I", 7) + good[8:], "version")


@pytest.mark.parametrize("cut", [10, 24, 100, 1000, -1, -500])
def test_truncated(tmp_path, good, cut):
    _rejects(tmp_path, good[:cut])


def test_tensor_beyond_eof_and_absurd_dims(tmp_path, good):
    name = "blk.1.attn_q.weight"
    at = _tensor_info_offset(good, name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", good, at)[0]
    offset_at = at + 4 + 8 * n_dims + 4
    far = bytearray(good)
    struct.pack_into("<Q", far, offset_at, 1 << 40)
    assert "past the end" in _rejects(tmp_path, bytes(far))
    huge = bytearray(good)
    struct.pack_into("<Q", huge, at + 4, 1 << 62)
    _rejects(tmp_path, bytes(huge))
    counts = bytearray(good)
    struct.pack_into("<Q", counts, 8, 1 << 60)  # tensor count
    _rejects(tmp_path, bytes(counts), "cannot fit")


def test_nan_weights_named(tmp_path):
    model = random_model(ODD, fmt="f32")
    data = np.array(model.tensors["blk.1.attn_k.weight"].data)
    data[3, 5] = np.nan
    model.tensors["blk.1.attn_k.weight"] = QTensor("f32", data.shape, data)
    write_gguf(tmp_path / "n.gguf", model)
    with pytest.raises(ModelError, match=r"blk\.1\.attn_k\.weight.*NaN"):
        read_gguf(tmp_path / "n.gguf")
    q = random_model(ODD, fmt="q8_0")
    raw = np.array(q.tensors["blk.0.attn_v.weight"].data)
    raw[0, 0:2] = np.array([np.inf], np.float16).view(np.uint8)
    q.tensors["blk.0.attn_v.weight"] = QTensor("q8_0", (32, 64), raw)
    write_gguf(tmp_path / "q.gguf", q)
    with pytest.raises(ModelError, match=r"attn_v.*infinite"):
        read_gguf(tmp_path / "q.gguf")


def test_missing_tensor_and_wrong_architecture(tmp_path):
    model = random_model(ODD)
    del model.tensors["blk.1.ffn_up.weight"]
    write_gguf(tmp_path / "m.gguf", model)
    with pytest.raises(ModelError, match=r"blk\.1\.ffn_up\.weight: missing tensor"):
        read_gguf(tmp_path / "m.gguf")
    w = gguf.GGUFWriter(tmp_path / "g.gguf", "gpt2")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ModelError, match="architecture 'llama'"):
        read_gguf(tmp_path / "g.gguf")


@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_mutated_files_raise_only_model_error(tmp_path_factory, good, edits, cut):
    data = bytearray(good)
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path_factory.mktemp("h") / "m.gguf"
    path.write_bytes(bytes(data))
    try:
        read_gguf(path)
    except ModelError as exc:
        assert "\n" not in str(exc)
