"""Calibration against published results: the issue's target, asserted."""

from __future__ import annotations

import pytest

from workbench.calibrate import ROWS, calibrate

# the target: every row within the band and a median error under 25% (docs/calibration.md); the median
# is held a little tighter than the target, at what is achieved, so that it cannot silently get worse
MEDIAN_ERROR_AT_MOST = 0.20


@pytest.fixture(scope="module")
def result():
    return calibrate()


def test_every_row_projects(result):
    assert len(result["rows"]) == len(ROWS)
    assert all(r["projected"] is not None and r["projected"] > 0 for r in result["rows"])


def test_every_row_within_the_band_and_the_median_under_target(result):
    outside = [(r["source"], r["chip"], r["metric"], round(r["ratio"], 2)) for r in result["rows"] if not r["within"]]
    assert not outside
    assert result["median_error"] < MEDIAN_ERROR_AT_MOST
