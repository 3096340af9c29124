"""Shape-only runs of the emulator's own program: the same executor and cost model, no numerics.

Used by the compiler's ``auto`` mapping (fastest plan) and by projections of models
that are too big to emulate numerically.
"""

from __future__ import annotations


def decode_cycles(plan, context_tokens: int = 1) -> float:
    """Chip cycles of one decode step with ``context_tokens`` already in the KV cache."""
    from .machine.machine import Machine

    m = Machine(plan.chip, plan.config, plan.options, numeric=False, plan=plan)
    m.set_prompt([1] * max(1, min(context_tokens, plan.context - 1)))
    m.step_token()
    return m.step_token_cycles()
