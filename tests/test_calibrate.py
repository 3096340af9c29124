"""Calibration against published results: what is achieved, asserted; the exceptions listed."""

from __future__ import annotations

import pytest

from workbench.calibrate import ROWS, calibrate

# rows the projection cannot match without a per-model factor (docs/calibration.md says why)
# (Tenstorrent's prefill rows and the p150's decode row run slower than the chips' resources; the long N10 prefill
# is still too slow; A9 at batch 256 sits at the band's lower edge)
KNOWN_OUTSIDE = {("T10", "tenstorrent-wormhole-galaxy", "ttft_s"), ("T10", "tenstorrent-wormhole-quietbox", "ttft_s"),
                 ("T10", "tenstorrent-wormhole-n150", "ttft_s"), ("T10", "tenstorrent-blackhole-p150", "ttft_s"),
                 ("T10", "tenstorrent-blackhole-p150", "tokens_per_s_per_user"), ("N10", "nvidia-h100-x2", "ttft_s"),
                 ("A9", "amd-mi300x-x8", "e2e_tokens_per_s")}
# what is achieved, so that it cannot silently get worse; the target (median under 25%, every row in band)
# is not met, and docs/calibration.md says what stands in the way
MEDIAN_ERROR_AT_MOST = 0.33
WITHIN_AT_LEAST = 14


@pytest.fixture(scope="module")
def result():
    return calibrate()


def test_every_row_projects(result):
    assert len(result["rows"]) == len(ROWS)
    assert all(r["projected"] is not None and r["projected"] > 0 for r in result["rows"])


def test_median_error_and_exceptions(result):
    assert result["median_error"] < MEDIAN_ERROR_AT_MOST
    outside = {(r["source"], r["chip"], r["metric"]) for r in result["rows"] if not r["within"]}
    assert outside <= KNOWN_OUTSIDE
    assert sum(r["within"] for r in result["rows"]) >= WITHIN_AT_LEAST
