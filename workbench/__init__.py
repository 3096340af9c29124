"""asicbench: a terminal workbench for LLM-inference hardware.

The core (chip, model, compiler, machine, cost model, projection, session) lives in
this package and never imports textual or rich; the faces (``workbench.cli``,
``workbench.tui``) sit on top of it.
"""

__version__ = "0.1.0"

from .jitcache import ensure_fresh as _ensure_fresh

_ensure_fresh()  # before any numba function loads from its on-disk cache
