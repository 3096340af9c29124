"""``asicbench chips``: list, show (tables and JSON), check; errors stay ProfileError and one line at the edge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.chip import bundled_chips, load_chip
from workbench.cli.chips import app
from workbench.errors import ProfileError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_list_shows_every_bundled_chip_with_its_figures():
    result = _invoke("list")
    assert result.exit_code == 0, result.output
    for name in bundled_chips():
        assert name in result.output
    assert "737.3 TOPS" in result.output          # groq-lpu int8
    assert "80 GiB HBM3 @ 3.35 TB/s" in result.output
    assert "none (SRAM only)" in result.output
    assert "576" in result.output


def test_show_prints_parameters_derived_figures_and_sources():
    result = _invoke("show", "groq-lpu")
    assert result.exit_code == 0, result.output
    out = result.output
    for needle in ("tile.macs_per_cycle.int8", "10240", "G7: 4 MXM planes", "SRAM bandwidth", "79.99 TB/s",
                   "NoC bisection bandwidth", "921.6 GB/s", "ridge = peak ops/s / SRAM bytes/s", "737.3 TOPS"):
        assert needle in out, needle


def test_show_system_profile_has_system_table():
    out = _invoke("show", "nvidia-h100-x8").output
    assert "System (8 chips, switch)" in out and "15.83 POPS" in out


def test_show_json_matches_the_spec():
    result = _invoke("show", "--json", "nvidia-h100-sxm")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    chip = load_chip("nvidia-h100-sxm")
    assert doc["tile"]["macs_per_cycle"]["fp8"] == 4096
    assert doc["derived"]["peak_ops_per_s"]["fp8"] == chip.peak_ops_per_s("fp8")
    assert doc["derived"]["offchip_bytes_per_s"] == 3.35e12
    assert doc["derived"]["ridge_ops_per_byte"]["int4"] == chip.ridge_ops_per_byte("int8")
    assert doc["source"]["memory"].startswith("N1, N2")


def test_check_good_file_prints_one_summary_line():
    result = _invoke("check", str(ROOT / "chips" / "teaching-4x4.toml"))
    assert result.exit_code == 0
    assert result.output.count("\n") == 1
    assert result.output.startswith("ok: teaching-4x4: 16 tiles, 4 MiB SRAM")


def test_errors_are_profile_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[chip]\nname = 'x'\nclok_ghz = 1\n")
    for args in (("check", str(bad)), ("show", str(bad)), ("show", "groq-lpv")):
        result = _invoke(*args)
        assert isinstance(result.exception, ProfileError), (args, result.exception)


def test_root_cli_prints_one_line_and_exits_2(tmp_path):
    pytest.importorskip("workbench.cli.models")  # the root app registers every sub-app
    bad = tmp_path / "bad.toml"
    bad.write_text("[chip]\nname = 'x'\nclok_ghz = 1\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from workbench.cli import main; main()", "chips", "check", str(bad)],
        capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(bad) in lines[0] and "chip.clok_ghz" in lines[0] and "did you mean 'clock_ghz'" in lines[0]


def test_chip_core_does_not_import_rich_or_textual():
    code = "import sys, workbench.chip as c; c.load_chip('groq-lpu'); print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'textual', 'typer')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
