"""A workbench: chip + model + options + a running machine, driven by the shared commands.

The TUI and the session runner both hold a Bench and call the same methods, so a recorded
session replays exactly what the user saw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .chip import load_chip
from .compiler import CompileOptions
from .errors import WorkbenchError
from .machine.machine import Machine
from .model.load import load_model

DEFAULT_CHIP = "teaching-4x4"
DEFAULT_MODEL = "tinytales"
DEFAULT_PROMPT = "Once upon a time"


@dataclass(frozen=True)
class BenchOptions:
    """Everything that defines a run. chip/model: bundled names or paths (relative to ``base``)."""

    chip: str = DEFAULT_CHIP
    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    precision: str = "int8"
    mapping: str = "auto"
    batch: int = 1
    prompt: str = DEFAULT_PROMPT
    temperature: float = 0.0
    seed: int = 0
    context: int = 0
    prefill_chunk: int = 16

    def validate(self) -> "BenchOptions":
        """Check the flags before anything is loaded, so a typo is reported first."""
        CompileOptions(precision=self.precision, mapping=self.mapping, batch=self.batch, context=self.context,
                       prefill_chunk=self.prefill_chunk).check_flags()
        if not 0 <= self.temperature <= 100:
            raise WorkbenchError(f"temperature must be between 0 and 100, got {self.temperature}", key="temperature")
        return self


# A ``project`` command: a big model projected onto a chip system (shape only), its result kept as a mark.
PROJECT_KEYS = {"mark": str, "chip": str, "model": str, "precision": str, "mapping": str, "batch": int, "chips": int,
                "prompt_len": int, "gen_len": int}
PROJECT_REQUIRED = ("mark", "chip", "model")
PROJECT_MIN = {"batch": 1, "chips": 0, "prompt_len": 1, "gen_len": 1}


def projection_params(table) -> dict:
    """Validate a ``project`` table ({mark, chip, model, precision?, mapping?, batch?, chips?, prompt_len?,
    gen_len?}); raises WorkbenchError naming the key. ``chips`` 0 (the default) means the profile's system."""
    from .data import did_you_mean

    if not isinstance(table, dict):
        raise WorkbenchError(f"expected a table {{mark, chip, model, ...}}, found {table!r}")
    unknown = [k for k in table if k not in PROJECT_KEYS]
    if unknown:
        raise WorkbenchError(f"unknown key '{unknown[0]}'{did_you_mean(unknown[0], list(PROJECT_KEYS))}"
                             f" (keys: {', '.join(PROJECT_KEYS)})")
    missing = [k for k in PROJECT_REQUIRED if k not in table]
    if missing:
        raise WorkbenchError(f"expected keys {', '.join(PROJECT_REQUIRED)}; missing {', '.join(missing)}")
    for key, value in table.items():
        kind = PROJECT_KEYS[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < PROJECT_MIN[key]):
            raise WorkbenchError(f"expected an integer >= {PROJECT_MIN[key]}, found {value!r}", key=key)
        if kind is str and (not isinstance(value, str) or not value.strip()):
            raise WorkbenchError(f"expected a non-empty string, found {value!r}", key=key)
    return dict(table)


def parse_projection_text(text: str, default_mark: str = "projection") -> dict:
    """The TUI's one-line form of a ``project`` table: ``CHIP MODEL [key=value ...]``, e.g.
    ``groq-lpu-x576 llama-3.1-70b precision=int4 chips=288``; integers become ints; validated."""
    words = text.split()
    positional = [w for w in words if "=" not in w]
    if len(positional) != 2:
        raise WorkbenchError(f"expected CHIP MODEL [key=value ...], found {text!r}")
    table: dict[str, object] = {"mark": default_mark, "chip": positional[0], "model": positional[1]}
    for w in words:
        if "=" in w:
            key, _, value = w.partition("=")
            table[key] = int(value) if PROJECT_KEYS.get(key) is int and value.lstrip("-").isdigit() else value
    return projection_params(table)


def projection_metrics(p) -> dict:
    """A projection as mark metrics: the same names as an emulated window's, None where it has no meaning."""
    from .session.spec import METRICS

    out: dict[str, object] = {m: None for m in METRICS}
    out.update(tokens_per_s=p.tokens_per_s, tokens_per_s_per_user=p.tokens_per_s_per_user,
               ms_per_token=1e3 * p.seconds_per_token, joules_per_token=p.joules_per_token, watts=p.watts,
               ttft_s=p.ttft_s)
    fit = "fits" if p.fits else f"does not fit: about {int(p.fit.get('chips_needed', 0)):,} chips needed"
    out["text"] = (f"{p.model} on {p.chips} x {p.chip} ({p.precision}, {p.mapping}, batch {p.batch}):"
                   f" bound by {p.bound}; {fit}")
    out["projection"] = p.to_dict()
    return out


class Bench:
    """Owns the loaded chip and model and the Machine built from them."""

    def __init__(self, options: BenchOptions | None = None, *, base: Path | None = None):
        self.options = (options or BenchOptions()).validate()
        self.base = base
        self._chip_key = self._model_key = None
        self.chip = self.model = self.machine = None
        self.rebuild()

    # -- building ----------------------------------------------------------------------------------
    def _resolve(self, value: str) -> str:
        if self.base is not None and not Path(value).is_absolute() and (self.base / value).exists():
            return str(self.base / value)
        return value

    def project(self, params: dict):
        """Project a model spec onto a chip system (``projection_params``); the running machine is untouched."""
        from .model.specs import load_spec
        from .projection import project

        q = projection_params(params)
        given = {k: v for k, v in q.items() if k not in ("mark", "chip", "model")}  # the rest keep project()'s defaults
        given["chips"] = given.get("chips") or None  # 0: the profile's own system
        return project(load_chip(self._resolve(q["chip"])), load_spec(self._resolve(q["model"])), **given)

    def rebuild(self) -> None:
        """(Re)load what changed, recompile, reset, and queue the prompt."""
        o = self.options
        if self._chip_key != o.chip:
            self.chip = load_chip(self._resolve(o.chip))
            self._chip_key = o.chip
        if self._model_key != (o.model, o.tokenizer):
            self.model = load_model(self._resolve(o.model), tokenizer=self._resolve(o.tokenizer) if o.tokenizer else None)
            self._model_key = (o.model, o.tokenizer)
        cfg = self.model.config
        copts = CompileOptions(precision=o.precision, mapping=o.mapping, batch=o.batch, context=o.context,
                               prefill_chunk=o.prefill_chunk)
        self.machine = Machine(self.chip, self.model, copts, temperature=o.temperature, seed=o.seed)
        self.prompt_ids = self.encode(o.prompt)
        if len(self.prompt_ids) >= self.machine.plan.context:
            raise WorkbenchError(f"the prompt has {len(self.prompt_ids)} tokens; the context is {self.machine.plan.context}"
                                 f" (the model's is {cfg.seq_len})", key="prompt")
        self.machine.set_prompt(self.prompt_ids)

    def set(self, name: str, value) -> str:
        """Change one option, rebuild, and say what changed. On error nothing changes."""
        if not hasattr(self.options, name):
            raise WorkbenchError(f"unknown option '{name}'")
        old = self.options
        current = getattr(old, name)
        try:
            if isinstance(current, bool) or current is None:
                value = value
            elif isinstance(current, int):
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{name} expects a {type(current).__name__}, got {value!r}", key=name) from None
        self.options = replace(old, **{name: value})
        try:
            self.options.validate()
            self.rebuild()
        except Exception:
            self.options = old
            self._chip_key = self._model_key = None
            self.rebuild()
            raise
        return f"{name}: {current} -> {value}; recompiled ({self.machine.plan.mapping} mapping), reset"

    # -- text --------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        tok = self.model.tokenizer
        if not text:
            return [tok.bos_id if tok else 1]
        if tok is None:
            try:  # a model without a tokenizer takes token ids
                return [1] + [int(x) for x in text.replace(",", " ").split()]
            except ValueError:
                raise WorkbenchError("this model has no tokenizer: give the prompt as token ids, e.g. '461 401'",
                                     key="prompt") from None
        return tok.encode(text, bos=True)

    def decode(self, ids: list[int]) -> str:
        tok = self.model.tokenizer
        if tok is None:
            return " ".join(str(i) for i in ids)
        return tok.decode(ids)

    def text(self, seq: int = 0) -> str:
        """The generated continuation of sequence ``seq``."""
        return self.decode(self.machine.generated[seq])

    @property
    def eos_id(self) -> int:
        return self.model.tokenizer.eos_id if self.model.tokenizer else 2
