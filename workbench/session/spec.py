"""Session files: parse and validate ``session.toml`` into a SessionSpec (options + ordered steps).

The step vocabulary is workbench.commands.COMMANDS plus ``expect``; every error names the
file and the step number, what was expected and what was found.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from ..bench import BenchOptions
from ..commands import BY_NAME, COMMANDS
from ..data import did_you_mean
from ..errors import SessionError, WorkbenchError

TOP_KEYS = ("chip", "model", "tokenizer", "title", "description", "options", "steps")
OPTION_KEYS = tuple(f.name for f in fields(BenchOptions) if f.name not in ("chip", "model", "tokenizer"))
STEP_KEYS = tuple(c.name for c in COMMANDS) + ("expect",)
MAX_COUNT = 100_000  # more generate/step repeats than any session needs: a typo guard

# Window metrics an expectation can bound (see docs/sessions.md for the exact definitions).
METRICS = ("tokens", "tokens_per_s", "tokens_per_s_per_user", "ms_per_token", "joules_per_token", "watts", "ttft_s",
           "kv_tokens_spilled", "offchip_bytes", "agreement_with_f32", "seconds", "joules", "noc_hop_bytes",
           "hottest_link_bytes", "allreduce_bytes", "allgather_bytes", "moe_routing_bytes")
BOUNDS = {"below": "<", "above": ">", "at_least": ">=", "at_most": "<="}
TEXT_CHECKS = ("text_contains", "text_not_contains")
EXPECT_KEYS = ("at", "ratio") + TEXT_CHECKS + tuple(f"{m}_{b}" for m in METRICS for b in BOUNDS)
RATIO_KEYS = ("metric", "mark", "over") + tuple(BOUNDS)


@dataclass(frozen=True)
class Check:
    """One bound: ``metric`` (at mark ``at``, None = the window since the last mark) ``op`` ``bound``.

    kind 'bound': metric op bound; 'text': text_contains / text_not_contains with a string bound;
    'ratio': metric at ``mark`` divided by metric at ``over``, op bound.
    """

    kind: str
    metric: str
    op: str
    bound: object
    at: str | None = None
    over: str | None = None

    def describe(self) -> str:
        if self.kind == "text":
            return f"{self.metric} {self.bound!r}" + (f" at {self.at}" if self.at else "")
        if self.kind == "ratio":
            return f"{self.metric}[{self.at}] / {self.metric}[{self.over}] {self.op} {self.bound:g}"
        return f"{self.metric}{f'[{self.at}]' if self.at else ''} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Step:
    """number: 1-based position in the file; name: a COMMANDS name or 'expect'; value: validated argument
    (int count, 'eos', option value, text; a tuple of Checks for expect)."""

    number: int
    name: str
    value: object

    def as_pair(self) -> tuple[str, object]:
        return self.name, self.value

    @property
    def mark_name(self) -> str | None:
        """The mark this step sets: a mark step's name, or a project step's result; None for other steps."""
        if self.name == "mark":
            return self.value
        return self.value["mark"] if self.name == "project" else None


@dataclass(frozen=True)
class SessionSpec:
    source: str          # file name as given (for messages)
    base: Path | None    # folder relative chip/model paths are taken from
    options: BenchOptions
    title: str
    description: str
    steps: tuple[Step, ...]

    def marks(self) -> list[str]:
        return [s.mark_name for s in self.steps if s.mark_name]


def _where(number: int | None) -> str | None:
    return f"step {number}" if number is not None else None


def _err(source, number, message: str) -> SessionError:
    return SessionError(message, source=source, key=_where(number))


def _typename(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table",
            list: "an array"}.get(type(value), type(value).__name__)


def _option_value(source, number, name: str, value, key_label: str):
    """Validate one option value (top-level [options] or a step) by the command's declared kind."""
    cmd = BY_NAME.get(name)
    default = getattr(BenchOptions(), name) if hasattr(BenchOptions(), name) else None
    label = key_label
    if isinstance(default, bool) or isinstance(value, bool):
        raise _err(source, number, f"{label}: expected {_typename(default)}, found {value!r}")
    if isinstance(default, int):
        if not isinstance(value, int):
            raise _err(source, number, f"{label}: expected an integer, found {_typename(value)} {value!r}")
        low = 0 if name in ("context", "seed") else 1
        if value < low:
            raise _err(source, number, f"{label}: expected an integer >= {low}, found {value}")
        if name == "seed" and value >= 2**64:  # the sampler's xorshift state is one uint64
            raise _err(source, number, f"{label}: expected an integer in 0..2^64-1, found {value}")
        return value
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise _err(source, number, f"{label}: expected a finite number >= 0, found {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise _err(source, number, f"{label}: expected a string, found {_typename(value)} {value!r}")
    if cmd is not None and cmd.arg == "choice" and value not in cmd.choices:
        raise _err(source, number, f"{label}: expected one of {', '.join(cmd.choices)}, found {value!r}"
                                   f"{did_you_mean(value, cmd.choices)}")
    if name in ("chip", "model") and not value.strip():
        raise _err(source, number, f"{label}: expected a bundled name or a path, found an empty string")
    return value


def _count(source, number, name: str, value, allow_eos: bool):
    if allow_eos and value == "eos":
        return "eos"
    if value is True:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        want = "a count 1..100000" + (" or \"eos\"" if allow_eos else " (or true for 1)")
        raise _err(source, number, f"{name}: expected {want}, found {value!r}")
    return value


def _bound_number(source, number, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(source, number, f"expect.{key}: expected a finite number, found {value!r}")
    return float(value)


def _mark_name(source, number, key: str, value, marks_so_far: list[str]) -> str:
    if not isinstance(value, str):
        raise _err(source, number, f"{key}: expected a mark name (string), found {value!r}")
    if value not in marks_so_far:
        raise _err(source, number, f"{key}: expected a mark set by an earlier step ({', '.join(marks_so_far) or 'none yet'}),"
                                   f" found {value!r}{did_you_mean(value, marks_so_far)}")
    return value


def parse_expect(source, number, table, marks_so_far: list[str]) -> tuple[Check, ...]:
    """The checks of one ``expect = {...}`` step, in a stable order (keys sorted)."""
    if not isinstance(table, dict) or not table:
        raise _err(source, number, f"expect: expected a non-empty table of checks, found {table!r}")
    unknown = [k for k in table if k not in EXPECT_KEYS]
    if unknown:
        raise _err(source, number, f"expect: unknown check '{unknown[0]}'{did_you_mean(unknown[0], EXPECT_KEYS)}"
                                   f" (checks: <metric>_below/_above/_at_least/_at_most, text_contains,"
                                   f" text_not_contains, ratio, at; metrics: {', '.join(METRICS)})")
    at = _mark_name(source, number, "expect.at", table["at"], marks_so_far) if "at" in table else None
    checks: list[Check] = []
    for key in sorted(table):
        value = table[key]
        if key == "at":
            continue
        if key in TEXT_CHECKS:
            items = value if isinstance(value, list) else [value]
            if not items or not all(isinstance(v, str) and v for v in items):
                raise _err(source, number, f"expect.{key}: expected a non-empty string or array of strings, found {value!r}")
            checks += [Check("text", key, "", v, at) for v in items]
        elif key == "ratio":
            items = value if isinstance(value, list) else [value]
            for i, r in enumerate(items):
                label = "expect.ratio" + (f"[{i}]" if isinstance(value, list) else "")
                if not isinstance(r, dict):
                    raise _err(source, number, f"{label}: expected a table {{metric, mark, over, at_least|...}},"
                                               f" found {r!r}")
                bad = [k for k in r if k not in RATIO_KEYS]
                if bad:
                    raise _err(source, number, f"{label}: unknown key '{bad[0]}'{did_you_mean(bad[0], RATIO_KEYS)}")
                missing = [k for k in ("metric", "mark", "over") if k not in r]
                ops = [k for k in BOUNDS if k in r]
                if missing or len(ops) != 1:
                    raise _err(source, number, f"{label}: expected metric, mark, over and exactly one of"
                                               f" {', '.join(BOUNDS)}; found keys {', '.join(sorted(r))}")
                if r["metric"] not in METRICS:
                    raise _err(source, number, f"{label}.metric: expected one of {', '.join(METRICS)}, found"
                                               f" {r['metric']!r}{did_you_mean(str(r['metric']), METRICS)}")
                mark = _mark_name(source, number, f"{label}.mark", r["mark"], marks_so_far)
                over = _mark_name(source, number, f"{label}.over", r["over"], marks_so_far)
                bound = _bound_number(source, number, f"ratio.{ops[0]}", r[ops[0]])
                checks.append(Check("ratio", r["metric"], BOUNDS[ops[0]], bound, mark, over))
        else:
            suffix = next(b for b in sorted(BOUNDS, key=len, reverse=True) if key.endswith("_" + b))
            metric = key[: -len(suffix) - 1]
            checks.append(Check("bound", metric, BOUNDS[suffix], _bound_number(source, number, key, value), at))
    return tuple(checks)


def parse_step(source, number: int, table, marks_so_far: list[str]) -> Step:
    if not isinstance(table, dict):
        raise _err(source, number, f"expected a table like {{ generate = 8 }}, found {_typename(table)}")
    keys = list(table)
    if len(keys) != 1:
        raise _err(source, number, f"expected exactly one command key ({', '.join(STEP_KEYS)}),"
                                   f" found {len(keys)}: {', '.join(keys) or 'none'}")
    name, value = keys[0], table[keys[0]]
    if name not in STEP_KEYS:
        raise _err(source, number, f"unknown command '{name}'{did_you_mean(name, STEP_KEYS)}"
                                   f" (commands: {', '.join(STEP_KEYS)})")
    if name == "expect":
        return Step(number, name, parse_expect(source, number, value, marks_so_far))
    if name in ("generate", "run"):
        return Step(number, name, _count(source, number, name, value, allow_eos=True))
    if name in ("step_layer", "step_op"):
        return Step(number, name, _count(source, number, name, value, allow_eos=False))
    if name == "reset":
        if value is not True:
            raise _err(source, number, f"reset: expected true, found {value!r}")
        return Step(number, name, True)
    if name == "project":
        from ..bench import projection_params

        try:
            params = projection_params(value)
        except WorkbenchError as exc:
            raise _err(source, number, f"project: {exc}") from None
        if params["mark"] in marks_so_far:
            raise _err(source, number, f"project.mark: expected a new name, found {params['mark']!r}"
                                       " (already set by an earlier step)")
        return Step(number, name, params)
    if name in ("note", "mark"):
        if not isinstance(value, str) or not value.strip():
            raise _err(source, number, f"{name}: expected a non-empty string, found {value!r}")
        if name == "mark" and value in marks_so_far:
            raise _err(source, number, f"mark: expected a new name, found {value!r} (already set by an earlier step)")
        return Step(number, name, value)
    return Step(number, name, _option_value(source, number, name, value, name))


def parse_session(doc: dict, source: str | Path, base: Path | None = None) -> SessionSpec:
    """Validate a parsed TOML document; ``source`` names the file in messages."""
    source = str(source)
    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        raise SessionError(f"unknown key '{unknown[0]}'{did_you_mean(unknown[0], TOP_KEYS)}"
                           f" (expected: {', '.join(TOP_KEYS)})", source=source)
    values: dict[str, object] = {}
    for key in ("chip", "model", "tokenizer"):
        if key in doc:
            if not isinstance(doc[key], str) or not doc[key].strip():
                raise SessionError(f"expected a bundled name or a path, found {doc[key]!r}", source=source, key=key)
            values[key] = doc[key]
    for key in ("title", "description"):
        if key in doc and not isinstance(doc[key], str):
            raise SessionError(f"expected a string, found {_typename(doc[key])}", source=source, key=key)
    opts = doc.get("options", {})
    if not isinstance(opts, dict):
        raise SessionError(f"expected a table, found {_typename(opts)}", source=source, key="options")
    for key, value in opts.items():
        if key not in OPTION_KEYS:
            raise SessionError(f"unknown option '{key}'{did_you_mean(key, OPTION_KEYS)}"
                               f" (options: {', '.join(OPTION_KEYS)})", source=source, key="options")
        try:
            values[key] = _option_value(source, None, key, value, f"options.{key}")
        except SessionError as exc:
            raise SessionError(str(exc).split(": ", 1)[1], source=source) from None
    raw_steps = doc.get("steps", [])
    if not isinstance(raw_steps, list):
        raise SessionError(f"expected an array of tables ([[steps]]), found {_typename(raw_steps)}", source=source,
                           key="steps")
    steps, marks = [], []
    for i, table in enumerate(raw_steps, start=1):
        step = parse_step(source, i, table, marks)
        if step.mark_name:
            marks.append(step.mark_name)
        steps.append(step)
    return SessionSpec(source, base, BenchOptions(**values), doc.get("title", ""), doc.get("description", ""),
                       tuple(steps))


MAX_SESSION_BYTES = 8 << 20  # a recorded session is a few KiB; anything near this is not one


def load_session(path: str | Path) -> SessionSpec:
    """Read and validate a session file (a bundled session name works too)."""
    from ..data import resolve

    resolved = resolve("sessions", path, (".toml",))
    try:
        with open(resolved, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size  # read what is there, never a buffer of the cap's size
            raw = fh.read(min(size, MAX_SESSION_BYTES) + 1)
        if len(raw) > MAX_SESSION_BYTES:
            raise SessionError(f"expected a session of at most {MAX_SESSION_BYTES} bytes, found more", source=path)
        doc = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SessionError(f"expected valid TOML, found a syntax error: {exc}", source=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionError(f"cannot read the file ({exc})", source=path) from None
    except RecursionError:
        raise SessionError("expected a session file, found nesting too deep to parse", source=path) from None
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit
        raise SessionError(f"expected valid TOML values, found one Python cannot read ({exc})", source=path) from None
    return parse_session(doc, resolved.name if str(path) == resolved.stem else path, base=resolved.parent)
