"""Tokenizer: ids equal llama2.c's run.c (tests/data/tokenizer_vectors.json), round trips, file formats, training."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from workbench.cli.models_tokens import register
from workbench.errors import ModelError
from workbench.model.tokenizer import SP_SPACE, TYPE_BYTE, TYPE_CONTROL, Tokenizer, train_bpe

VECTORS = json.loads((Path(__file__).parent / "data" / "tokenizer_vectors.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def llama(llama2c_tokenizer) -> Tokenizer:
    return Tokenizer.from_llama2c(llama2c_tokenizer)


@pytest.fixture(scope="module")
def llama512(llama2c_tokenizer) -> Tokenizer:
    return Tokenizer.from_llama2c(llama2c_tokenizer, 512)


def _corpus(n_texts: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ("once upon a time there was a little girl named Lily she liked to play with her big red ball "
             "in the park one day café naïve 🦙 said mom happy sad dog cat").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) + rng.choice([".", "!", "\n"])
            for _ in range(n_texts)]


@pytest.fixture(scope="module")
def toy() -> Tokenizer:
    return train_bpe(_corpus(), 400)


def _run_c_encode(tok: Tokenizer, text: str) -> list[int]:
    """run.c's O(n^2) merge loop, written plainly, over the same initial symbols: the oracle for the heap."""
    ids = [tok.bos_id]
    if not text:
        return ids
    ids += tok._symbols(tok.space_piece + text.replace(" ", tok.space_piece))
    while True:
        best = (-1e10, -1, -1)
        for i in range(1, len(ids) - 1):
            m = tok.piece_to_id(tok.id_to_piece(ids[i]) + tok.id_to_piece(ids[i + 1]))
            if m is not None and tok.score(m) > best[0]:
                best = (tok.score(m), m, i)
        if best[2] < 0:
            return ids
        ids[best[2]:best[2] + 2] = [best[1]]


# ---- llama2.c ground truth ------------------------------------------------------------------------

def test_vectors_file_says_how_it_was_produced():
    assert "run.c" in VECTORS["how_produced"]
    texts = {c["text"] for c in VECTORS["cases"]}
    assert {"Hello world", "café", "naïve", "Ærøskøbing", "こんにちは世界", "🦙 👍🏽"} <= texts


def test_hello_world(llama):
    assert llama.encode("Hello world") == [1, 15043, 3186]
    assert llama.decode([1, 15043, 3186]) == "Hello world"


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['vocab_size']}:{c['text'][:20]!r}")
def test_matches_llama2c(case, llama, llama512):
    tok = llama if case["vocab_size"] == 32000 else llama512
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["decoded"]


def test_first_512_entries_of_32k_file(llama, llama512):
    assert llama512.vocab_size == 512
    assert [llama512.id_to_piece(i) for i in range(512)] == [llama.id_to_piece(i) for i in range(512)]
    text = "Once upon a time, Lily saw a big dog. 🦙"
    ids = llama512.encode(text)
    assert max(ids) < 512 and ids[0] == 1
    assert llama512.decode(ids) == text


@settings(max_examples=60)
@given(st.text(max_size=40))
def test_heap_merge_equals_run_c_loop(llama, text):
    assert llama.encode(text) == _run_c_encode(llama, text)


@given(st.text(max_size=60))
def test_round_trip_32k(llama, llama512, text):
    ids = llama.encode(text)
    assert llama.decode(ids) == text
    assert llama512.decode(llama512.encode(text)) == text
    assert llama.decode(llama.encode(text, bos=False)) == (" " + text if text else "")
    assert llama.encode(text, eos=True) == ids + [2]


def test_encode_10kb_is_linearithmic_and_exact(llama):
    text = ("Ærøskøbing café 🦙 こんにちは世界 The quick brown fox. " * 200)[:10_000]
    assert llama.decode(llama.encode(text)) == text
    short = text[:300]
    assert llama.encode(short) == _run_c_encode(llama, short)


def test_decode_joins_bytes_across_tokens(llama):
    llama_emoji = [b + 3 for b in "🦙".encode()]
    assert llama.decode([1] + llama_emoji) == "🦙"
    assert llama.decode([1, 0xF0 + 3, 0x41 + 3]) == "\ufffdA"  # truncated sequence, then 'A'
    assert llama.decode_piece(1, 0xF0 + 3) == "\ufffd"
    assert llama.decode_piece_bytes(1, 0xF0 + 3) == b"\xf0"
    assert llama.decode_piece(1, 15043) == "Hello" and llama.decode_piece(15043, 3186) == " world"


@pytest.mark.parametrize("bad", [-1, 32000, 10**9, 1.5, "3"])
def test_bad_ids_raise_model_error(llama, bad):
    with pytest.raises(ModelError, match="token id"):
        llama.decode([1, bad])


# ---- file formats -------------------------------------------------------------------------------

def test_llama2c_write_read_identity(llama, llama512, tmp_path, llama2c_tokenizer):
    for tok in (llama, llama512):
        out = tmp_path / f"tok{tok.vocab_size}.bin"
        tok.to_llama2c(out)
        assert Tokenizer.from_llama2c(out) == tok
    llama.to_llama2c(tmp_path / "same.bin")
    assert (tmp_path / "same.bin").read_bytes() == llama2c_tokenizer.read_bytes()


def test_gguf_fields_use_sentencepiece_form(llama):
    fields = llama.to_gguf_fields()
    assert set(fields) == {"tokens", "scores", "token_types", "bos_id", "eos_id", "unk_id"}
    assert fields["tokens"][15043] == SP_SPACE + "Hello" and fields["tokens"][29871] == SP_SPACE
    assert fields["tokens"][:3] == ["<unk>", "<s>", "</s>"]
    assert fields["token_types"][:4] == [2, 3, 3, 6] and fields["token_types"][15043] == 1
    back = Tokenizer.from_gguf_fields(fields["tokens"], np.asarray(fields["scores"], np.float32),
                                      np.asarray(fields["token_types"], np.int32), 1, 2)
    assert back.space_piece == SP_SPACE
    assert back.to_gguf_fields() == fields
    for case in VECTORS["cases"]:
        if case["vocab_size"] == 32000:
            assert back.encode(case["text"]) == case["ids"]
            assert back.decode(case["ids"]) == case["decoded"]


def test_toy_round_trips_through_both_formats(toy, tmp_path):
    fields = toy.to_gguf_fields()
    assert Tokenizer.from_gguf_fields(**fields) == toy
    toy.to_llama2c(tmp_path / "toy.bin")
    as_llama2c = Tokenizer.from_llama2c(tmp_path / "toy.bin")
    assert as_llama2c.space_piece == " " and as_llama2c.id_to_piece(259) == " "
    for text in _corpus(20, seed=5) + ["", "  two  spaces ", "ünknown ✓"]:
        assert as_llama2c.encode(text) == toy.encode(text)


def _llama2c_bytes(entries, max_len=None) -> bytes:
    body = b"".join(struct.pack("<fi", s, len(p)) + p for s, p in entries)
    return struct.pack("<i", max(len(p) for _, p in entries) if max_len is None else max_len) + body


_GOOD = [(0.0, b"<unk>"), (0.0, b"\n<s>\n"), (0.0, b"\n</s>\n"), (-1.0, b" "), (-2.0, b"a")]


@pytest.mark.parametrize("name,data", [
    ("empty", b""),
    ("short header", b"\x05\x00"),
    ("negative max_token_length", struct.pack("<i", -1) + _llama2c_bytes(_GOOD)[4:]),
    ("huge max_token_length", struct.pack("<i", 2**31 - 1) + _llama2c_bytes(_GOOD)[4:]),
    ("negative length", _llama2c_bytes(_GOOD) + struct.pack("<fi", 0.0, -5)),
    ("huge length", _llama2c_bytes(_GOOD) + struct.pack("<fi", 0.0, 2**31 - 1)),
    ("length beyond max_token_length", _llama2c_bytes(_GOOD, max_len=3)),
    ("truncated piece", _llama2c_bytes(_GOOD)[:-1]),
    ("truncated score", _llama2c_bytes(_GOOD) + b"\x00\x00"),
    ("not utf-8", _llama2c_bytes(_GOOD + [(0.0, b"\xff\xfe")])),
    ("too few tokens", _llama2c_bytes(_GOOD[:2])),
])
def test_hostile_llama2c_files(tmp_path, name, data):
    path = tmp_path / "tok.bin"
    path.write_bytes(data)
    with pytest.raises(ModelError) as info:
        Tokenizer.from_llama2c(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_gguf_fields_are_validated():
    with pytest.raises(ModelError, match="token 1"):
        Tokenizer.from_gguf_fields([b"<unk>", b"\xff", b"</s>"], [0.0] * 3, [2, 3, 3], 1, 2)
    with pytest.raises(ModelError, match="bos_id"):
        Tokenizer.from_gguf_fields(["<unk>", "<s>", "</s>"], [0.0] * 3, [2, 3, 3], 7, 2)
    with pytest.raises(ModelError, match="one score per piece"):
        Tokenizer.from_gguf_fields(["<unk>", "<s>", "</s>"], [0.0] * 2, [2, 3, 3], 1, 2)


def test_vocab_size_beyond_file(tmp_path):
    path = tmp_path / "tok.bin"
    path.write_bytes(_llama2c_bytes(_GOOD))
    assert Tokenizer.from_llama2c(path).vocab_size == 5
    with pytest.raises(ModelError, match="expected 6 tokens, found 5"):
        Tokenizer.from_llama2c(path, 6)


@given(st.binary(max_size=200), st.integers(0, 199), st.binary(min_size=1, max_size=4))
def test_corrupted_files_never_crash(tmp_path_factory, noise, where, patch):
    good = bytearray(_llama2c_bytes(_GOOD))
    where %= len(good)
    good[where:where + len(patch)] = patch
    for data in (bytes(good), noise):
        path = tmp_path_factory.mktemp("t") / "tok.bin"
        path.write_bytes(data)
        try:
            tok = Tokenizer.from_llama2c(path)
        except ModelError:
            continue
        assert isinstance(tok.decode(tok.encode("a é 🦙")), str)


# ---- training -----------------------------------------------------------------------------------

def test_train_bpe_layout(toy):
    assert toy.vocab_size == 400
    assert [toy.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert all(toy.id_to_piece(3 + b) == f"<0x{b:02X}>" and toy.token_type(3 + b) == TYPE_BYTE for b in range(256))
    assert toy.token_type(1) == TYPE_CONTROL and toy.space_piece == SP_SPACE
    assert toy.id_to_piece(259) == SP_SPACE  # most frequent character
    merges = [i for i in range(259, 400) if len(toy.id_to_piece(i)) > 1]
    assert [toy.score(i) for i in merges] == [-float(r) for r in range(len(merges))]
    assert toy.encode("once upon a time") == [1] + [toy.piece_to_id(SP_SPACE + w) for w in "once upon a time".split()]


def test_train_bpe_is_deterministic():
    corpus = _corpus(300, seed=3)
    first = train_bpe(corpus, 330, seed=7)
    assert train_bpe(list(corpus), 330, seed=7) == first
    assert train_bpe(corpus, 330, seed=8).vocab_size == first.vocab_size


def test_train_bpe_stops_when_nothing_is_left_to_merge():
    tok = train_bpe(["ab ab"], 1000)
    assert [tok.id_to_piece(i) for i in range(259, tok.vocab_size)] == [SP_SPACE, "a", "b", SP_SPACE + "a",
                                                                        SP_SPACE + "ab"]
    with pytest.raises(ModelError, match="vocab_size"):
        train_bpe(["ab"], 100)


@given(st.text(alphabet=st.characters(blacklist_characters=SP_SPACE), max_size=60))
def test_round_trip_toy(toy, text):
    assert toy.decode(toy.encode(text)) == text
    assert toy.encode(text) == _run_c_encode(toy, text)


# ---- CLI ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _models() -> None:
        """models"""

    register(app)
    return app


def test_cli_encode_decode(cli, llama2c_tokenizer):
    runner, tok = CliRunner(), str(llama2c_tokenizer)
    res = runner.invoke(cli, ["encode", "--tokenizer", tok, "--", "Hello world"])
    assert res.exit_code == 0 and res.output == "1 15043 3186\n"
    res = runner.invoke(cli, ["encode", "--tokenizer", tok, "--json", "--", "Hello", "world"])
    assert json.loads(res.output) == {"ids": [1, 15043, 3186]}
    res = runner.invoke(cli, ["decode", "--tokenizer", tok, "1", "15043", "3186"])
    assert res.exit_code == 0 and res.output == "Hello world\n"
    res = runner.invoke(cli, ["decode", "--tokenizer", tok, "--json", "1", "15043", "3186", "29871", "243", "162", "169", "156"])
    assert json.loads(res.output) == {"text": "Hello world 🦙"}


@pytest.mark.parametrize("ids,expected", [(["--", "-1"], "found -1"), (["32000"], "found 32000"), (["x"], "found 'x'")])
def test_cli_bad_ids(cli, llama2c_tokenizer, ids, expected):
    res = CliRunner().invoke(cli, ["decode", "--tokenizer", str(llama2c_tokenizer), *ids])
    assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output


def test_cli_missing_tokenizer(cli, tmp_path):
    res = CliRunner().invoke(cli, ["encode", "--tokenizer", str(tmp_path / "nope.bin"), "--", "hi"])
    assert res.exit_code == 2 and "no such file" in res.output
