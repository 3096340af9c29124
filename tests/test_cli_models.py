"""``asicbench models list|show|quantize`` through typer's runner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from workbench.cli.models import app
from workbench.model.config import ModelConfig
from workbench.model.gguf_io import read_gguf, write_gguf
from workbench.model.load import random_model

runner = CliRunner()
ODD = ModelConfig("odd", dim=64, hidden_dim=172, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=96, seq_len=64)


def test_list_shows_specs():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "llama-3.1-405b" in result.output and "405.85B" in result.output
    assert "mixtral-8x7b" in result.output and "8 experts top-2" in result.output


def test_show_spec_json():
    result = runner.invoke(app, ["show", "llama-3.1-70b", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["kind"] == "shape spec" and info["config"]["n_layers"] == 80
    assert info["bytes_per_precision"]["int8"] == info["parameters"] * 34 // 32


def test_show_model_sizes_each_tensor(tmp_path):
    write_gguf(tmp_path / "m.gguf", random_model(ODD, fmt="f32"))
    result = runner.invoke(app, ["show", str(tmp_path / "m.gguf"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == ODD.n_params()
    down = next(t for t in info["tensors"] if t["name"] == "blk.0.ffn_down.weight")
    assert down == {"name": "blk.0.ffn_down.weight", "type": "f32", "shape": [64, 172], "bytes": 64 * 172 * 4}
    assert info["bytes_per_precision"]["f32"] == ODD.n_params() * 4
    # int8 sizing pads each row to whole Q8_0 blocks (172 -> 6 blocks of 32 = 204 bytes); norms stay f32
    int8 = sum(t["shape"][0] * (t["shape"][-1] // 32 + (t["shape"][-1] % 32 > 0)) * 34 if len(t["shape"]) == 2
               else t["shape"][0] * 4 for t in info["tensors"])
    assert info["bytes_per_precision"]["int8"] == int8
    text = runner.invoke(app, ["show", str(tmp_path / "m.gguf")]).output
    assert "blk.0.ffn_down.weight" in text and "64x172" in text


def test_quantize_reports_fallbacks(tmp_path):
    write_gguf(tmp_path / "m.gguf", random_model(ODD, fmt="f32"))
    out = tmp_path / "q.gguf"
    result = runner.invoke(app, ["quantize", str(tmp_path / "m.gguf"), "--to", "int8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    fallbacks = [line for line in result.output.splitlines() if line.startswith("fallback:")]
    assert len(fallbacks) == 2 and all("ffn_down" in line for line in fallbacks)
    back = read_gguf(out)
    assert back.tensors["blk.0.attn_q.weight"].fmt == "q8_0" and back.tensors["blk.0.attn_norm.weight"].fmt == "f32"


def test_quantize_bad_choices(tmp_path):
    result = runner.invoke(app, ["quantize", "whatever", "--to", "int3", "-o", str(tmp_path / "x.gguf")])
    assert result.exit_code == 2
    assert "expected one of f32|fp16|bf16|int8|int4|ternary|binary, found 'int3'" in result.output
    missing = runner.invoke(app, ["quantize", "no-such-model", "--to", "int8", "-o", str(tmp_path / "x.gguf")])
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()


def test_quantize_stories260k(tmp_path, stories260k):
    out = tmp_path / "s.gguf"
    result = runner.invoke(app, ["quantize", str(stories260k), "--to", "ternary", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_gguf(out).config.hidden_dim == 172
