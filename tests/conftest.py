"""Shared test fixtures: where ../shared lives (skip when absent), deterministic hypothesis."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASICBENCH_SHARED", ROOT.parent / "shared"))

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


def _fixture(name: str) -> Path:
    path = SHARED / "fixtures" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def stories260k() -> Path:
    """../shared/fixtures/stories260K.bin: a real llama2.c checkpoint (skips when absent)."""
    return _fixture("stories260K.bin")


@pytest.fixture(scope="session")
def llama2c_tokenizer() -> Path:
    """../shared/fixtures/llama2c-tokenizer.bin: llama2.c's 32,000-token vocabulary (skips when absent)."""
    return _fixture("llama2c-tokenizer.bin")
