"""Model quality at a precision: perplexity on held-out text and top-1 agreement with the f32 reference.

Both run teacher-forced over the same token stream: the emulated chip (at the precision under test)
and the float32 numpy reference each predict every next token; windows restart at the model's
context length (or ``window``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compiler import CompileOptions
from .errors import WorkbenchError
from .machine.machine import Machine
from .model.reference import Reference


@dataclass(frozen=True)
class Evaluation:
    precision: str
    tokens: int
    perplexity: float
    reference_perplexity: float
    top1_agreement: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def evaluate(chip, model, ids: list[int], precision: str, *, window: int = 0, max_tokens: int = 2048,
             ) -> Evaluation:
    """Teacher-forced NLL of ``ids`` on the emulated chip at ``precision`` and on the f32 reference."""
    cfg = model.config
    window = min(window or cfg.seq_len, cfg.seq_len)
    if window < 2:
        raise WorkbenchError(f"window must be at least 2 tokens, got {window}")
    ids = [int(i) for i in ids][: max_tokens + 1]
    if len(ids) < 2:
        raise WorkbenchError("need at least 2 tokens of held-out text")
    machine = Machine(chip, model, CompileOptions(precision=precision, context=window, prefill_chunk=1))
    ref = Reference(model, max_seq=window)
    nll = ref_nll = 0.0
    agree = n = 0
    for s0 in range(0, len(ids) - 1, window):
        inputs, targets = ids[s0:s0 + window], ids[s0 + 1:s0 + window + 1]
        machine.set_prompt([inputs[0]])
        ref.reset()
        for t, target in enumerate(targets):
            lm = machine.feed(inputs[t])[0]
            lr = ref.step(np.array([inputs[t]]))[0]
            nll -= _log_softmax(lm)[target]
            ref_nll -= _log_softmax(lr)[target]
            agree += int(np.argmax(lm) == np.argmax(lr))
            n += 1
    return Evaluation(precision, n, float(np.exp(nll / n)), float(np.exp(ref_nll / n)), agree / n)
