"""Hostile input for every command and parser: one line on stderr and exit 2, never a traceback or a hang.

A table runs the real CLI entry point over bad flags and files; hypothesis mutates valid session files,
model specs, safetensors headers and tokenizer.bin files; Ctrl-C during commands that write files leaves no
partial file; results do not depend on the number of numba threads.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import struct
import subprocess
import sys
import tomllib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.cli import main
from workbench.errors import ModelError, SessionError, WorkbenchError
from workbench.model.config import ModelConfig
from workbench.model.gguf_io import write_gguf
from workbench.model.hf import write_hf
from workbench.model.llama2c import write_llama2c
from workbench.model.load import random_model
from workbench.model.tensor import QTensor

ROOT = Path(__file__).resolve().parents[1]
ENTRY = [sys.executable, "-c", "from workbench.cli import main; main()"]
TINY = ModelConfig(name="tiny", dim=64, hidden_dim=128, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256, seq_len=64)
TEACHING = (ROOT / "chips" / "teaching-4x4.toml").read_text()


def _chip(folder: Path, name: str, old: str, new: str) -> str:
    assert old in TEACHING, old
    path = folder / name
    path.write_text(TEACHING.replace(old, new, 1))
    return str(path)


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, str]:
    """Every malformed input the table uses, written once: name -> path."""
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.gguf"
    write_gguf(good, random_model(TINY, fmt="q8_0", seed=1))
    raw = good.read_bytes()
    out = {"good": str(good)}
    for name, data in (("truncated.gguf", raw[: len(raw) // 2]), ("header.gguf", raw[:40]),
                       ("magic.gguf", b"GGUX" + raw[4:]), ("empty.gguf", b""),
                       ("huge_count.gguf", raw[:8] + (2**62).to_bytes(8, "little") + raw[16:]),
                       ("empty.bin", b""), ("junk.bin", bytes(range(256)) * 2)):
        (d / name).write_bytes(data)
        out[name] = str(d / name)
    write_hf(d / "hf", random_model(TINY, seed=3))
    for name, data in (("junk.safetensors", (2**40).to_bytes(8, "little") + b"{}"),
                       ("badjson.safetensors", (4).to_bytes(8, "little") + b"{{{{")):
        (d / "hf" / name).write_bytes(data)
        out[name] = str(d / "hf" / name)
    nan = random_model(TINY, fmt="q8_0", seed=4)
    qt = nan.tensors["blk.0.attn_q.weight"]
    blocks = np.array(qt.data, copy=True)
    blocks.reshape(-1).view(np.uint8)[:2] = (0x00, 0x7E)  # block 0's f16 scale := NaN
    nan.tensors["blk.0.attn_q.weight"] = QTensor(qt.fmt, qt.shape, blocks)
    write_gguf(d / "nan.gguf", nan)
    out["nan.gguf"] = str(d / "nan.gguf")
    inf = random_model(TINY, seed=5)
    w = np.array(inf.tensors["blk.1.ffn_up.weight"].data, copy=True)
    w[0, 0] = np.inf
    inf.tensors["blk.1.ffn_up.weight"] = QTensor("f32", w.shape, w)
    write_llama2c(d / "inf.bin", inf)
    out["inf.bin"] = str(d / "inf.bin")
    l2c = d / "model.bin"
    write_llama2c(l2c, random_model(TINY, seed=2))
    (d / "truncated.bin").write_bytes(l2c.read_bytes()[:5000])
    out["truncated.bin"] = str(d / "truncated.bin")
    (d / "tok.bin").write_bytes((64).to_bytes(4, "little") + b"\x00\x00\x80\x3f" + (1000).to_bytes(4, "little") + b"ab")
    out["tok.bin"] = str(d / "tok.bin")
    (d / "folder.gguf").mkdir()
    out["folder"] = str(d / "folder.gguf")
    (d / "plain.txt").write_text("a file, not a folder\n")
    out["under_file"] = str(d / "plain.txt" / "out.gguf")
    out["under_file_dir"] = str(d / "plain.txt" / "sub")
    out["chip_syntax"] = str(d / "syntax.toml")
    (d / "syntax.toml").write_text("[mesh\nrows = 4\n")
    out["chip_type"] = _chip(d, "type.toml", "rows = 4", 'rows = "four"')
    out["chip_clock0"] = _chip(d, "clock0.toml", "clock_ghz = 1.0", "clock_ghz = 0")
    out["chip_huge"] = _chip(d, "huge.toml", "rows = 4\ncols = 4", "rows = 1000000\ncols = 1000000")
    out["chip_neg"] = _chip(d, "neg.toml", "sram_kib = 256", "sram_kib = -256")
    out["chip_unknown"] = _chip(d, "unknown.toml", "sram_kib = 256", "sram_kb = 256")
    out["chip_nested"] = str(d / "nested.toml")
    (d / "nested.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    sessions = {
        "sess_syntax": "[[steps]\n",
        "sess_step": f'chip = "teaching-4x4"\nmodel = "{good}"\n[[steps]]\nfly = 3\n',
        "sess_neg": f'chip = "teaching-4x4"\nmodel = "{good}"\n[[steps]]\ngenerate = -4\n',
        "sess_type": f'chip = "teaching-4x4"\nmodel = "{good}"\n[options]\nbatch = "two"\n',
        "sess_chip": f'chip = "{out["chip_clock0"]}"\nmodel = "{good}"\n[[steps]]\ngenerate = 1\n',
        "sess_model": f'chip = "teaching-4x4"\nmodel = "{out["truncated.gguf"]}"\n[[steps]]\ngenerate = 1\n',
        "sess_mark": f'chip = "teaching-4x4"\nmodel = "{good}"\n[[steps]]\nexpect = {{ at = "nowhere", tokens_at_least = 1 }}\n',
        "sess_ok": f'chip = "teaching-4x4"\nmodel = "{good}"\n[options]\nprompt = "1 2"\n[[steps]]\ngenerate = 1\n',
        "sess_binary": None,
    }
    for name, text in sessions.items():
        path = d / f"{name}.toml"
        if text is None:
            path.write_bytes(b"\xff\xfe\x00garbage")
        else:
            path.write_text(text)
        out[name] = str(path)
    nested = "x = " + "[" * 5000 + "]" * 5000 + "\n"
    digits = "x = " + "9" * 5000 + "\n"
    for name, text in (("sess_nested", nested), ("sess_digits", digits), ("spec_nested.toml", nested),
                       ("spec_digits.toml", digits), ("spec_source", '[model]\nname = "x"\n[[source]]\na = 1\n')):
        path = d / (name if name.endswith(".toml") else f"{name}.toml")
        path.write_text(text)
        out[name] = str(path)
    with open(d / "sess_huge.toml", "w") as fh:  # 9 MiB of comments: rejected by size, not parsed
        fh.write(("#" * 1023 + "\n") * (9 << 10))
    out["sess_huge"] = str(d / "sess_huge.toml")
    out["spec_bad"] = str(d / "spec.toml")
    (d / "spec.toml").write_text('name = "x"\ndim = -4096\n')
    return out


def _fill(text: str, bad: dict[str, str]) -> str:
    """'{name}' -> the path of that bad input (names hold dots, so str.format will not do)."""
    return bad[text[1:-1]] if text.startswith("{") and text.endswith("}") else text


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else code), captured.out, captured.err


# (id, argv with {name} placeholders filled from `bad`, a fragment the one line must contain)
CASES = [
    # flags
    ("run-precision", ["run", "--model", "{good}", "--precision", "int7"], "int7"),
    ("run-mapping", ["run", "--model", "{good}", "--mapping", "diagonal"], "diagonal"),
    ("run-batch0", ["run", "--model", "{good}", "--batch", "0"], "--batch"),
    ("run-batch-neg", ["run", "--model", "{good}", "--batch", "-3"], "--batch"),
    ("run-n-neg", ["run", "--model", "{good}", "-n", "-1"], "-n"),
    ("run-context-neg", ["run", "--model", "{good}", "--context", "-5"], "--context"),
    ("run-temp-neg", ["run", "--model", "{good}", "--temperature", "-1"], "--temperature"),
    ("run-seed-neg", ["run", "--model", "{good}", "--prompt", "1", "--seed", "-1"], "--seed"),
    ("run-seed-huge", ["run", "--model", "{good}", "--prompt", "1", "--seed", str(2**64)], "--seed"),
    ("run-temp-nan", ["run", "--model", "{good}", "--prompt", "1", "--temperature", "nan"], "temperature"),
    ("run-prompt-id-range", ["run", "--model", "{good}", "--prompt", "1 999999"], "999999"),
    ("run-prompt-text-no-tokenizer", ["run", "--model", "{good}", "--prompt", "once upon"], "prompt"),
    ("compile-ops-neg", ["compile", "--model", "{good}", "--ops", "-1"], "--ops"),
    ("run-n-too-long", ["run", "--model", "{good}", "--prompt", "1 2 3", "-n", "100000"], "context"),
    ("run-batch-text", ["run", "--batch", "two"], "--batch"),
    ("run-unknown-option", ["run", "--bogus"], "--bogus"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
    ("compile-precision", ["compile", "--model", "{good}", "--precision", "fp4"], "fp4"),
    ("compile-batch0", ["compile", "--model", "{good}", "--batch", "0"], "--batch"),
    ("compile-mapping", ["compile", "--model", "{good}", "--mapping", "nope"], "nope"),
    # model files
    ("run-missing-model", ["run", "--model", "/nonexistent/m.gguf"], "m.gguf"),
    ("run-dir-model", ["run", "--model", "{folder}"], "folder.gguf"),
    ("run-truncated-gguf", ["run", "--model", "{truncated.gguf}"], "truncated.gguf"),
    ("run-header-gguf", ["run", "--model", "{header.gguf}"], "header.gguf"),
    ("run-magic-gguf", ["run", "--model", "{magic.gguf}"], "magic.gguf"),
    ("run-empty-gguf", ["run", "--model", "{empty.gguf}"], "empty.gguf"),
    ("run-huge-count-gguf", ["run", "--model", "{huge_count.gguf}"], "huge_count.gguf"),
    ("run-junk-safetensors", ["run", "--model", "{junk.safetensors}"], "junk.safetensors"),
    ("run-empty-llama2c", ["run", "--model", "{empty.bin}"], "empty.bin"),
    ("run-junk-llama2c", ["run", "--model", "{junk.bin}"], "junk.bin"),
    ("run-truncated-llama2c", ["run", "--model", "{truncated.bin}"], "truncated.bin"),
    ("run-nan-scale-gguf", ["run", "--model", "{nan.gguf}"], "blk.0.attn_q.weight"),
    ("run-inf-llama2c", ["run", "--model", "{inf.bin}"], "blk.1.ffn_up.weight"),
    ("models-quantize-nan", ["models", "quantize", "{nan.gguf}", "--to", "int4", "-o", "/tmp/never.gguf"], "nan.gguf"),
    ("run-bad-tokenizer", ["run", "--model", "{good}", "--tokenizer", "{tok.bin}"], "tok.bin"),
    ("run-dir-tokenizer", ["run", "--model", "{good}", "--tokenizer", "{folder}"], "folder.gguf"),
    ("run-missing-tokenizer", ["run", "--model", "{good}", "--tokenizer", "/nonexistent/tok.bin"], "tok.bin"),
    ("compile-truncated-gguf", ["compile", "--model", "{truncated.gguf}"], "truncated.gguf"),
    ("models-show-magic", ["models", "show", "{magic.gguf}"], "magic.gguf"),
    ("models-show-missing", ["models", "show", "/nonexistent/x.gguf"], "x.gguf"),
    ("models-show-badjson", ["models", "show", "{badjson.safetensors}"], "badjson.safetensors"),
    ("models-show-spec", ["models", "show", "{spec_bad}"], "spec.toml"),
    ("models-quantize-truncated", ["models", "quantize", "{truncated.gguf}", "--to", "int4", "-o", "{under_file}"],
     "truncated.gguf"),
    ("models-quantize-to", ["models", "quantize", "{good}", "--to", "int3", "-o", "/tmp/x.gguf"], "--to"),
    ("models-quantize-unwritable", ["models", "quantize", "{good}", "--to", "int4", "-o", "{under_file}"], "out.gguf"),
    ("models-quantize-proc", ["models", "quantize", "{good}", "--to", "int4", "-o", "/proc/asicbench.gguf"],
     "asicbench.gguf"),
    ("models-quantize-dir", ["models", "quantize", "{good}", "--to", "int4", "-o", "{folder}"], "folder.gguf"),
    ("models-eval-magic", ["models", "eval", "{magic.gguf}"], "magic.gguf"),
    ("models-eval-no-tokenizer", ["models", "eval", "{good}"], "tokenizer"),
    ("models-eval-max-tokens", ["models", "eval", "{good}", "--max-tokens", "-1"], "--max-tokens"),
    ("models-eval-precision", ["models", "eval", "{good}", "--precision", "int9"], "int9"),
    ("models-encode-magic", ["models", "encode", "-t", "{magic.gguf}", "hi"], "magic.gguf"),
    ("models-encode-bad-tok", ["models", "encode", "-t", "{tok.bin}", "hi"], "tok.bin"),
    ("models-encode-no-tok", ["models", "encode", "-t", "{good}", "hi"], "good.gguf"),
    ("models-decode-folder", ["models", "decode", "-t", "{folder}", "1"], "folder.gguf"),
    ("models-decode-missing", ["models", "decode", "-t", "/nonexistent/t.bin", "1"], "t.bin"),
    # chip profiles
    ("chips-show-unknown", ["chips", "show", "teaching-5x5"], "teaching-5x5"),
    ("chips-check-missing", ["chips", "check", "/nonexistent/c.toml"], "c.toml"),
    ("chips-check-dir", ["chips", "check", "{folder}"], "folder.gguf"),
    ("chips-check-syntax", ["chips", "check", "{chip_syntax}"], "syntax.toml"),
    ("chips-check-type", ["chips", "check", "{chip_type}"], "rows"),
    ("chips-check-clock0", ["chips", "check", "{chip_clock0}"], "clock_ghz"),
    ("chips-check-huge", ["chips", "check", "{chip_huge}"], "huge.toml"),
    ("chips-check-neg", ["chips", "check", "{chip_neg}"], "sram_kib"),
    ("chips-check-unknown-key", ["chips", "check", "{chip_unknown}"], "sram_kb"),
    ("chips-check-nested", ["chips", "check", "{chip_nested}"], "nested.toml"),
    ("chips-check-binary", ["chips", "check", "{magic.gguf}"], "magic.gguf"),
    ("chips-list-extra", ["chips", "list", "extra"], "extra"),
    ("run-bad-chip", ["run", "--chip", "{chip_neg}", "--model", "{good}"], "sram_kib"),
    ("compile-bad-chip", ["compile", "--chip", "{chip_syntax}", "--model", "{good}"], "syntax.toml"),
    # sessions
    ("replay-missing", ["replay", "/nonexistent/s.toml"], "s.toml"),
    ("replay-dir", ["replay", "{folder}"], "folder.gguf"),
    ("replay-syntax", ["replay", "{sess_syntax}"], "sess_syntax.toml"),
    ("replay-binary", ["replay", "{sess_binary}"], "sess_binary.toml"),
    ("replay-unknown-step", ["replay", "{sess_step}"], "fly"),
    ("replay-negative-generate", ["replay", "{sess_neg}"], "generate"),
    ("replay-option-type", ["replay", "{sess_type}"], "batch"),
    ("replay-bad-chip", ["replay", "{sess_chip}"], "clock_ghz"),
    ("replay-bad-model", ["replay", "{sess_model}"], "truncated.gguf"),
    ("replay-unknown-mark", ["replay", "{sess_mark}"], "nowhere"),
    ("replay-nested", ["replay", "{sess_nested}"], "sess_nested.toml"),
    ("replay-digits", ["replay", "{sess_digits}"], "sess_digits.toml"),
    ("replay-huge-file", ["replay", "{sess_huge}"], "at most"),
    ("replay-trace-tokens", ["replay", "{sess_ok}", "--trace-tokens", "0"], "--trace-tokens"),
    ("replay-report-unwritable", ["replay", "{sess_ok}", "--report", "{under_file}"], "out.gguf"),
    ("replay-trace-proc", ["replay", "{sess_ok}", "--trace", "/proc/asicbench-trace.json"], "asicbench-trace.json"),
    ("replay-report-dir", ["replay", "{sess_ok}", "--report", "{folder}"], "folder.gguf"),
    ("replay-csv-under-file", ["replay", "{sess_ok}", "--csv", "{under_file_dir}"], "sub"),
    # projection
    ("project-precision", ["project", "--chip", "nvidia-h100-sxm", "--model", "llama-3.1-8b", "--precision", "int3"],
     "int3"),
    ("project-batch0", ["project", "--chip", "nvidia-h100-sxm", "--model", "llama-3.1-8b", "--batch", "0"], "batch"),
    ("project-batch-neg", ["project", "--chip", "nvidia-h100-sxm", "--model", "llama-3.1-8b", "--batch", "-2"],
     "batch"),
    ("project-gen-neg", ["project", "--chip", "nvidia-h100-sxm", "--model", "llama-3.1-8b", "--gen-len", "-1"],
     "gen"),
    ("project-chips-neg", ["project", "--chip", "nvidia-h100-sxm", "--model", "llama-3.1-8b", "--chips", "-1"],
     "--chips"),
    ("project-mapping", ["project", "--chip", "nvidia-h100-x8", "--model", "llama-3.1-8b", "--mapping", "zigzag"],
     "zigzag"),
    ("project-bad-spec", ["project", "--chip", "nvidia-h100-sxm", "--model", "{spec_bad}"], "spec.toml"),
    ("project-nested-spec", ["project", "--chip", "nvidia-h100-sxm", "--model", "{spec_nested.toml}"],
     "spec_nested.toml"),
    ("project-digits-spec", ["project", "--chip", "nvidia-h100-sxm", "--model", "{spec_digits.toml}"],
     "spec_digits.toml"),
    ("project-source-array", ["project", "--chip", "nvidia-h100-sxm", "--model", "{spec_source}"], "source"),
    ("run-context-too-long", ["run", "--model", "{good}", "--context", "100000"], "context"),
    ("project-context-too-long", ["project", "--chip", "nvidia-h100-sxm", "--model", "llama-3.1-8b",
                                  "--prompt-len", "1000000", "--gen-len", "1000000"], "context"),
    ("project-missing-spec", ["project", "--chip", "nvidia-h100-sxm", "--model", "/nonexistent/s.toml"], "s.toml"),
    ("project-bad-chip", ["project", "--chip", "{chip_huge}", "--model", "llama-3.1-8b"], "huge.toml"),
    ("project-magic-gguf", ["project", "--chip", "nvidia-h100-sxm", "--model", "{magic.gguf}"], "magic.gguf"),
    ("calibrate-extra", ["calibrate", "--chip", "x"], "--chip"),
    ("doctor-extra", ["doctor", "now"], "now"),
]


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(capsys, bad, argv, fragment):
    argv = [_fill(a, bad) for a in argv]
    code, _, err = _run(capsys, argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("asicbench: "), err
    assert fragment in lines[0], (fragment, err)


def test_no_partial_output_after_a_failed_write(bad):
    assert not Path(bad["under_file"]).exists()
    assert not list(Path(bad["folder"]).iterdir())


@pytest.mark.parametrize("argv", [["run", "--nope"], ["chips", "show", "no-such-chip"], ["replay", "/nonexistent.toml"]])
def test_real_entry_point_in_a_subprocess(argv):
    """The console script itself (a fresh interpreter): one line, exit 2, also for typer's own usage errors."""
    res = subprocess.run([*ENTRY, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr and "╭" not in res.stderr


def test_help_and_version_still_exit_0(capsys):
    code, out, _ = _run(capsys, ["--version"])
    assert code == 0 and out.startswith("asicbench ")
    code, out, _ = _run(capsys, ["run", "--help"])
    assert code == 0 and "--precision" in out


def test_good_input_still_works(capsys, bad):
    """The same harness accepts a good run, so the table above cannot pass by rejecting everything."""
    code, out, err = _run(capsys, ["run", "--model", bad["good"], "--prompt", "1 2 3", "-n", "2", "--json"])
    assert code == 0, err
    assert len(json.loads(out)["tokens"]) == 2




# -- fuzzing: mutated valid files give the parser's error or a valid result, within time and memory -------

FUZZ_SECONDS = 5  # per example: every parser here is linear in its input; a hang is a bug
# ASICBENCH_FUZZ_EXAMPLES=5000 explores (random seeds); the default is the bounded, derandomized CI run
_EXPLORE = int(os.environ.get("ASICBENCH_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXPLORE or 80, derandomize=not _EXPLORE)


@contextlib.contextmanager
def _bounded(file_bytes: int):
    """Fail on a hang (SIGALRM) or on a peak allocation far beyond the file (tracemalloc sees numpy too)."""
    def alarm(signum, frame):
        raise TimeoutError(f"parser still running after {FUZZ_SECONDS} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(FUZZ_SECONDS)
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    limit = 64 * file_bytes + (8 << 20)
    assert peak <= limit, f"peak allocation {peak} B for a {file_bytes} B file"


def _parses_or_raises(parse, data: bytes, path: Path, error=WorkbenchError):
    path.write_bytes(data)
    with _bounded(len(data)):
        try:
            return parse(path)
        except error:
            return None


_JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63]),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=6,
)
_TOMLISH = st.recursive(  # TOML has no null
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1, 2**31, 10**12]),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=6,
)


def _paths(doc, prefix=()):
    """Every (path to a value) in a nested dict/list document, tables included."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _mutate_doc(data, doc, values):
    """Replace, delete or add one value anywhere in a parsed document (a deep copy)."""
    doc = copy.deepcopy(doc)
    paths = list(_paths(doc))
    target = data.draw(st.sampled_from(paths))
    parent = doc
    for key in target[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[target[-1]] = data.draw(values)
    elif action == "delete":
        del parent[target[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
    else:
        parent.append(data.draw(values))
    return doc


_BYTE_EDITS = st.tuples(
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.integers(0, 1 << 16)),
)


def _mutate_bytes(raw: bytes, edits) -> bytes:
    changes, cut = edits
    out = bytearray(raw)
    for pos, value in changes:
        if out:
            out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


SESSION_FILES = sorted((ROOT / "sessions").glob("*.toml"))
SPEC_FILES = sorted((ROOT / "models").glob("*.toml"))


@FUZZ
@given(data=st.data(), which=st.integers(0, len(SESSION_FILES) - 1), as_bytes=st.booleans())
def test_fuzz_session_files(tmp_path_factory, data, which, as_bytes):
    from workbench.session import load_session

    raw = SESSION_FILES[which].read_bytes()
    if as_bytes:
        mutated = _mutate_bytes(raw, data.draw(_BYTE_EDITS))
    else:
        mutated = tomli_w.dumps(_mutate_doc(data, tomllib.loads(raw.decode()), _TOMLISH)).encode()
    path = tmp_path_factory.mktemp("fuzz") / "s.toml"
    _parses_or_raises(load_session, mutated, path, SessionError)


@FUZZ
@given(data=st.data(), which=st.integers(0, len(SPEC_FILES) - 1), as_bytes=st.booleans())
def test_fuzz_model_specs(tmp_path_factory, data, which, as_bytes):
    from workbench.model.specs import parse_spec

    raw = SPEC_FILES[which].read_bytes()
    if as_bytes:
        mutated = _mutate_bytes(raw, data.draw(_BYTE_EDITS))
    else:
        mutated = tomli_w.dumps(_mutate_doc(data, tomllib.loads(raw.decode()), _TOMLISH)).encode()
    path = tmp_path_factory.mktemp("fuzz") / "spec.toml"
    cfg = _parses_or_raises(parse_spec, mutated, path, ModelError)
    if cfg is not None:
        assert cfg.dim >= 1 and cfg.n_heads % cfg.n_kv_heads == 0


def _safetensors(header: dict, body: bytes, n_header: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return (len(text) if n_header is None else n_header).to_bytes(8, "little") + text + body


_ST_BODY = np.arange(24, dtype=np.float32).tobytes()
_ST_HEADER = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "F16", "shape": [4, 2], "data_offsets": [24, 40]},
              "c": {"dtype": "BF16", "shape": [28], "data_offsets": [40, 96]}}


@FUZZ
@given(data=st.data(), mode=st.sampled_from(["doc", "bytes", "length"]))
def test_fuzz_safetensors_headers(tmp_path_factory, data, mode):
    from workbench.model.hf import read_safetensors

    if mode == "doc":
        mutated = _safetensors(_mutate_doc(data, _ST_HEADER, _JSONISH), _ST_BODY)
    elif mode == "bytes":
        mutated = _mutate_bytes(_safetensors(_ST_HEADER, _ST_BODY), data.draw(_BYTE_EDITS))
    else:
        n = data.draw(st.one_of(st.integers(0, 600), st.integers(0, 2**64 - 1)))
        mutated = _safetensors(_ST_HEADER, _ST_BODY, n)
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    tensors = _parses_or_raises(read_safetensors, mutated, path, ModelError)
    for qt in (tensors or {}).values():
        assert qt.data.nbytes <= 4 * len(mutated)  # widened from at most 2 bytes per value in the file


def _tokenizer_bytes(pieces: list[bytes], scores: list[float], max_len: int) -> bytes:
    body = b"".join(struct.pack("<fi", s, len(p)) + p for p, s in zip(pieces, scores))
    return struct.pack("<i", max_len) + body


_TOK_PIECES = [b"<unk>", b"<s>", b"</s>", *[bytes([c]) for c in b"abcdefgh "], b"ab", b"cd", b"abcd", b" a"]


@FUZZ
@given(data=st.data(), vocab=st.one_of(st.none(), st.integers(-2, 40)))
def test_fuzz_tokenizer_bin(tmp_path_factory, data, vocab):
    from workbench.model.tokenizer import Tokenizer

    raw = _tokenizer_bytes(_TOK_PIECES, [float(-i) for i in range(len(_TOK_PIECES))], 5)
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1),
                                         st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255)), max_size=5))
    mutated = _mutate_bytes(raw, (edits, data.draw(st.one_of(st.none(), st.integers(0, len(raw))))))
    path = tmp_path_factory.mktemp("fuzz") / "tokenizer.bin"
    tok = _parses_or_raises(lambda p: Tokenizer.from_llama2c(p, vocab), mutated, path, ModelError)
    if tok is not None:
        text = "abc dab"
        assert all(0 <= i < tok.vocab_size for i in tok.encode(text))


# -- Ctrl-C: no partial file, a line saying what was completed ------------------------------------------

def _interrupt_on_call(monkeypatch, target, attr: str, call: int, counts=lambda *args: True) -> None:
    """Make ``target.attr`` raise KeyboardInterrupt on its ``call``-th counted call (1-based), as Ctrl-C would."""
    original = getattr(target, attr)
    calls = [0]

    def wrapper(*args, **kwargs):
        if counts(*args):
            calls[0] += 1
            if calls[0] == call:
                raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attr, wrapper)


def _numeric_token_steps(monkeypatch, call: int) -> None:
    """Ctrl-C at the ``call``-th token of the emulated run (the compiler's shape-only timing runs do not count)."""
    from workbench.machine.machine import Machine

    _interrupt_on_call(monkeypatch, Machine, "step_token", call, counts=lambda machine: machine.numeric)


def test_ctrl_c_during_run_json(capsys, monkeypatch, bad):
    _numeric_token_steps(monkeypatch, 3)
    code, out, err = _run(capsys, ["run", "--model", bad["good"], "--prompt", "1 2 3", "-n", "6", "--json"])
    assert code == 130
    assert out == ""  # no half JSON object
    assert "interrupted after 2 tokens" in err


def _replay_outputs(tmp_path: Path) -> list[str]:
    return ["--trace", str(tmp_path / "t.json"), "--csv", str(tmp_path / "csv"), "--report", str(tmp_path / "r.md")]


def _session(tmp_path: Path, bad) -> str:
    path = tmp_path / "s.toml"
    path.write_text(f'chip = "teaching-4x4"\nmodel = "{bad["good"]}"\n[options]\nprompt = "1 2"\n'
                    "[[steps]]\ngenerate = 2\n[[steps]]\nmark = \"a\"\n[[steps]]\ngenerate = 3\n")
    return str(path)


def test_ctrl_c_during_replay_writes_nothing(capsys, monkeypatch, bad, tmp_path):
    session = _session(tmp_path, bad)
    out = tmp_path / "out"
    out.mkdir()
    from workbench.session.runner import Replay

    _interrupt_on_call(monkeypatch, Replay, "_token", 4)  # the 2nd token of step 3
    code, _, err = _run(capsys, ["replay", session, *_replay_outputs(out)])
    assert code == 130
    assert "interrupted after 2 of 3 steps" in err and "no output file written" in err
    assert sorted(p.name for p in out.rglob("*")) == []


def test_ctrl_c_while_replay_writes_keeps_only_whole_files(capsys, monkeypatch, bad, tmp_path):
    import workbench.session.export as export

    session = _session(tmp_path, bad)
    out = tmp_path / "out"
    out.mkdir()
    _interrupt_on_call(monkeypatch, export, "report_markdown", 1)
    code, _, err = _run(capsys, ["replay", session, *_replay_outputs(out)])
    assert code == 130 and "none is partial" in err
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert "r.md" not in names and not [n for n in names if n.endswith(".tmp")]
    assert "t.json" in names  # written before the interrupt, complete
    json.loads((out / "t.json").read_text())


def test_ctrl_c_during_quantize_leaves_no_file(capsys, monkeypatch, bad, tmp_path):
    import gguf

    def half_then_interrupt(self, *args, **kwargs):
        self.fout[0].write(b"\0" * 4096)  # bytes already in the temp file when Ctrl-C lands
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", half_then_interrupt)
    target = tmp_path / "q.gguf"
    code, out, err = _run(capsys, ["models", "quantize", bad["good"], "--to", "int4", "-o", str(target)])
    assert code == 130
    assert "interrupted while writing" in err and "nothing written" in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_quantize_keeps_an_existing_file(capsys, monkeypatch, bad, tmp_path):
    import gguf

    target = tmp_path / "q.gguf"
    target.write_bytes(b"previous")
    _interrupt_on_call(monkeypatch, gguf.GGUFWriter, "write_tensors_to_file", 1)
    code, _, _ = _run(capsys, ["models", "quantize", bad["good"], "--to", "int4", "-o", str(target)])
    assert code == 130
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]


# -- threads: numba's thread count changes nothing ---------------------------------------------------------

def test_results_do_not_depend_on_numba_threads(bad):
    outs = []
    for threads in ("1", "2"):
        res = subprocess.run([*ENTRY, "run", "--model", bad["good"], "--prompt", "1 2 3 4", "-n", "6", "--batch", "2",
                              "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": threads})
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        doc.pop("host_tokens_per_s")  # host wall-clock speed, the one figure that may differ
        outs.append(doc)
    assert outs[0] == outs[1]


# -- hostile GGUF headers: sizes and counts far beyond the file are refused before anything is allocated ----

def _gguf_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf_header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


HOSTILE_GGUF = {
    "kv count 2^62": _gguf_header(0, 2**62),
    "string of 2^60 bytes": _gguf_header(0, 1) + _gguf_str("a") + struct.pack("<IQ", 8, 2**60),
    "array of 2^60 items": _gguf_header(0, 1) + _gguf_str("a") + struct.pack("<IIQ", 9, 0, 2**60),
    "array of 2^40 strings": _gguf_header(0, 1) + _gguf_str("a") + struct.pack("<IIQ", 9, 8, 2**40) + _gguf_str("x") * 3,
    "arrays nested 2000 deep": _gguf_header(0, 1) + _gguf_str("a") + struct.pack("<IIQ", 9, 9, 1) * 2000,
    "unknown value type": _gguf_header(0, 1) + _gguf_str("a") + struct.pack("<I", 99) + bytes(8),
    "tensor with 2^31 dims": _gguf_header(1, 0) + _gguf_str("token_embd.weight") + struct.pack("<IQ", 2**31, 5),
    "tensor of 2^80 elements": _gguf_header(1, 0) + _gguf_str("token_embd.weight")
    + struct.pack("<IQQIQ", 2, 2**40, 2**40, 0, 0),
}


@pytest.mark.parametrize("what", list(HOSTILE_GGUF))
def test_hostile_gguf_headers_are_refused_cheaply(tmp_path, what):
    from workbench.model.gguf_io import read_gguf

    data = HOSTILE_GGUF[what]
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    with _bounded(len(data)):
        with pytest.raises(ModelError) as exc:
            read_gguf(path)
    assert str(exc.value).startswith(str(path))
