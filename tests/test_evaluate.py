"""Perplexity and top-1 agreement: the emulated chip at f32 is the reference; quantized paths stay close."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.chip import load_chip
from workbench.cli import main
from workbench.evaluate import evaluate
from workbench.model.load import load_model
from workbench.model.reference import Reference


@pytest.fixture(scope="module")
def model(stories260k, llama2c_tokenizer):
    return load_model(stories260k, tokenizer=llama2c_tokenizer)


def _reference_perplexity(model, ids: list[int]) -> float:
    ref = Reference(model, max_seq=model.config.seq_len)
    nll = 0.0
    for t in range(len(ids) - 1):
        z = ref.step(np.array([ids[t]]))[0].astype(np.float64)
        z -= z.max()
        nll -= z[ids[t + 1]] - np.log(np.exp(z).sum())
    return float(np.exp(nll / (len(ids) - 1)))


def test_f32_on_the_chip_is_the_reference(model):
    ids = model.tokenizer.encode("Once upon a time, there was a little girl named Lily. She liked to play.",
                                 bos=True, eos=True)
    e = evaluate(load_chip("teaching-4x4"), model, ids, "f32")
    assert e.tokens == len(ids) - 1
    assert e.top1_agreement == 1.0
    assert e.perplexity == pytest.approx(e.reference_perplexity, rel=1e-4)
    assert e.reference_perplexity == pytest.approx(_reference_perplexity(model, ids), rel=1e-9)
    assert 1.0 < e.perplexity < 512


def test_windows_restart_and_int8_stays_close(model):
    ids = model.tokenizer.encode("Tom had a red ball. He threw it to his dog. The dog ran fast and got it. "
                                 "Tom was happy.", bos=True, eos=True)
    whole = evaluate(load_chip("teaching-4x4"), model, ids, "int8")
    windowed = evaluate(load_chip("teaching-4x4"), model, ids, "int8", window=8)
    assert whole.tokens == windowed.tokens == len(ids) - 1
    # less context per prediction can only be judged, not ordered; but the windows must change the numbers
    assert windowed.reference_perplexity != whole.reference_perplexity
    assert whole.top1_agreement >= 0.8
    assert whole.perplexity == pytest.approx(whole.reference_perplexity, rel=0.15)


def test_cli_frames_each_paragraph(model, stories260k, llama2c_tokenizer, tmp_path, capsys):
    text = tmp_path / "heldout.txt"
    text.write_text("Lily saw a cat.\n\nThe cat was soft.\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        main(["models", "eval", str(stories260k), "--tokenizer", str(llama2c_tokenizer), "--text", str(text),
              "--precision", "f32", "--json"])
    assert stop.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    tok = model.tokenizer
    expect = tok.encode("Lily saw a cat.", bos=True, eos=True) + tok.encode("The cat was soft.", bos=True, eos=True)
    assert rows[0]["tokens"] == len(expect) - 1
    assert rows[0]["reference_perplexity"] == pytest.approx(_reference_perplexity(model, expect), rel=1e-9)


def test_cli_finds_the_base_models_heldout_text(capsys):
    """tinytales-ternary has no held-out file of its own: it is evaluated on tinytales' (it was trained on the same
    stories); a model with neither says which file it looked for."""
    with pytest.raises(SystemExit) as stop:
        main(["models", "eval", "tinytales-ternary", "--max-tokens", "16", "--precision", "ternary", "--json"])
    assert stop.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["tokens"] == 16


def test_cli_without_heldout_text_says_what_it_looked_for(stories260k, llama2c_tokenizer, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["models", "eval", str(stories260k), "--tokenizer", str(llama2c_tokenizer), "--max-tokens", "16"])
    assert stop.value.code == 2
    assert "stories260K-heldout.txt not found" in capsys.readouterr().err
