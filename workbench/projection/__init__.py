"""Projections of big models onto real chip systems: the emulator's program and cost model, shapes only.

``project(chip, config, ...)`` returns a :class:`Projection` (see estimate.py and docs/projection.md).
"""

from __future__ import annotations

from .estimate import MAPPINGS, PHASES, PRECISIONS, Projection, project

__all__ = ["MAPPINGS", "PHASES", "PRECISIONS", "Projection", "project"]
