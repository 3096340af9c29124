"""`asicbench run` and `compile` end to end: every bundled chip that fits the model gives the same tokens
and counters that add up; the CLI's JSON has the documented keys; bad flags are one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from workbench.bench import Bench, BenchOptions
from workbench.data import bundled_names, data_dir
from workbench.errors import CompileError

HAS_TINYTALES = (data_dir("models") / "tinytales.gguf").is_file()
needs_tinytales = pytest.mark.skipif(not HAS_TINYTALES, reason="models/tinytales.gguf is absent")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from workbench.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference_tokens():
    b = Bench(BenchOptions(chip="teaching-4x4", precision="int8", mapping="tensor"))
    b.machine.generate(6)
    return b.machine.generated[0]


@needs_tinytales
@pytest.mark.parametrize("chip", bundled_names("chips", (".toml",)))
def test_every_bundled_chip_gives_the_same_tokens_and_balanced_counters(chip, reference_tokens):
    try:
        b = Bench(BenchOptions(chip=chip, precision="int8"))
    except CompileError as exc:  # a chip the model does not fit on must say so in one line
        assert "\n" not in str(exc)
        return
    m = b.machine
    m.generate(6)
    assert m.generated[0] == reference_tokens
    c = m.counters
    assert c.sent.sum() == c.recv.sum()
    assert c.link_bytes.sum() == c.hop_bytes[0]
    used = m.plan.weight_bytes + m.plan.staging_bytes + m.plan.act_bytes + m.plan.kv_bytes
    assert np.all(used <= b.chip.sram_bytes_per_tile)


@needs_tinytales
def test_run_json_has_the_documented_keys():
    out = _cli("run", "-n", "4", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    for key in ("tokens", "text", "ttft_s", "seconds_per_token", "tokens_per_s_per_user", "tokens_per_s",
                "joules_per_token", "watts", "host_tokens_per_s", "counters"):
        assert key in d
    assert len(d["tokens"]) == 4 and d["ttft_s"] > 0 and d["joules_per_token"] > 0


@needs_tinytales
def test_hottest_link_is_named_for_the_topology():
    """A mesh link has a direction; a crossbar chip's (a GPU's) busiest link is a tile's port out or in."""
    names = {}
    for chip in ("teaching-4x4", "nvidia-h100-sxm"):
        out = _cli("run", "--chip", chip, "-n", "2", "--json")
        assert out.returncode == 0, out.stderr
        names[chip] = json.loads(out.stdout)["hottest_link"]["direction"]
    assert names["teaching-4x4"] in tuple("NESW")
    assert names["nvidia-h100-sxm"] in ("port out", "port in")


def test_run_on_a_llama2c_checkpoint_from_bos_matches_llama2c(stories260k):
    out = _cli("run", "--model", str(stories260k), "--prompt", "", "-n", "8", "--precision", "f32", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tokens"] == [461, 461, 401, 401, 401, 461, 378, 455]


def test_compile_prints_plan_bounds_and_program(stories260k):
    out = _cli("compile", "--model", str(stories260k), "--ops", "60")
    assert out.returncode == 0, out.stderr
    assert "tile   0:" in out.stdout and "accumulators:" in out.stdout and "matmul" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["run", "--precision", "int3"], "precision"),
    (["run", "--batch", "0"], "batch"),
    (["run", "-n", "-1"], "-n"),
    (["run", "--mapping", "diagonal"], "mapping"),
    (["run", "--chip", "no-such-chip"], "no-such-chip"),
    (["compile", "--model", "/nonexistent/model.gguf"], "model.gguf"),
])
def test_bad_flags_are_one_line_and_exit_2(args, needle):
    out = _cli(*args)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], out.stderr
