"""Sweep files (sweep.toml): parse and validate them, derive chip variants through the chip loader, expand the grid.

A grid point is a mixed-radix number over (model, axis 1, ..., axis n), the last axis
varying fastest; its id never depends on how or where the point is evaluated.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import chip as chipmod
from ..chip import ChipSpec
from ..compiler import MAPPINGS
from ..data import did_you_mean, resolve
from ..errors import ProfileError, WorkbenchError
from ..model.config import ModelConfig
from ..precision import CHIP_PRECISIONS

MAX_SWEEP_BYTES = 256 * 1024
MAX_POINTS = 1_000_000
MAX_CHIP_VARIANTS = 20_000
MAX_AXIS_VALUES = 10_000
MAX_MODELS = 64
FORMAT_VERSION = 1  # bump when the meaning of a results row changes: old sidecars then stop matching

TOP_KEYS = ("base_chip", "models", "description", "chip", "options", "axes")
CHIP_SECTIONS = chipmod.SECTIONS
# run option -> (default, kind, lo, hi); chips None means "as many as the profile's system has"
RUN_OPTIONS: dict[str, tuple[Any, str, int, int]] = {
    "precision": ("int8", "str", 0, 0),
    "batch": (1, "int", 1, 4096),
    "prompt_len": (128, "int", 1, 10**7),
    "gen_len": (128, "int", 1, 10**7),
    "chips": (None, "int", 1, chipmod.MAX_CHIPS),
    "mapping": ("auto", "str", 0, 0),
}
_CHOICES = {"precision": CHIP_PRECISIONS, "mapping": MAPPINGS}


@dataclass(frozen=True)
class Axis:
    """One swept parameter: ``name`` is a run option or a dotted chip-profile key (a section for table values)."""

    name: str
    values: tuple
    is_chip: bool

    def columns(self) -> list[str]:
        """Result columns for this axis: itself, or one per key of its table values."""
        if self.values and isinstance(self.values[0], dict):
            keys = list(dict.fromkeys(k for v in self.values for k in _flatten(v)))  # first-seen order
            return [f"{self.name}.{k}" for k in keys]
        return [self.name]

    def cells(self, index: int) -> dict[str, Any]:
        value = self.values[index]
        if isinstance(value, dict):
            flat = _flatten(value)
            return {f"{self.name}.{k}": flat.get(k) for k in (c[len(self.name) + 1:] for c in self.columns())}
        return {self.name: value}


@dataclass
class Sweep:
    """A validated sweep: models, chip variants (one per combination of chip-axis values), run axes.

    ``variants[i]`` is the ChipSpec for chip-axis digits ``i`` (mixed radix over ``chip_axes``).
    """

    path: Path
    base_chip: Path
    models: list[tuple[str, ModelConfig]]
    axes: list[Axis]
    options: dict[str, Any]          # fixed run options (not swept)
    chip_overrides: dict[str, Any]   # fixed dotted chip key -> value
    variants: list[ChipSpec] = field(repr=False)
    fingerprint: str = ""

    @property
    def chip_axes(self) -> list[Axis]:
        return [a for a in self.axes if a.is_chip]

    @property
    def n_points(self) -> int:
        return len(self.models) * math.prod(len(a.values) for a in self.axes)

    def columns(self) -> list[str]:
        """Input columns of every row, in order: point_id, model, axes, fixed run options."""
        cols = ["point_id", "model"]
        for axis in self.axes:
            cols += axis.columns()
        cols += [name for name in RUN_OPTIONS if name not in {a.name for a in self.axes}]
        return cols

    def point(self, point_id: int) -> tuple[int, ChipSpec, dict[str, Any], dict[str, Any]]:
        """(model index, chip variant, run options, input cells) of one point."""
        if not 0 <= point_id < self.n_points:
            raise IndexError(point_id)
        digits = []
        rest = point_id
        for axis in reversed(self.axes):
            rest, d = divmod(rest, len(axis.values))
            digits.append(d)
        digits.reverse()
        model_index = rest
        variant = 0
        options = dict(self.options)
        cells: dict[str, Any] = {"point_id": point_id, "model": self.models[model_index][0]}
        for axis, d in zip(self.axes, digits):
            cells.update(axis.cells(d))
            if axis.is_chip:
                variant = variant * len(axis.values) + d
            else:
                options[axis.name] = axis.values[d]
        for name in RUN_OPTIONS:
            cells.setdefault(name, options[name])
        return model_index, self.variants[variant], options, cells


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _nest(dotted: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _describe(value: Any) -> str:
    return chipmod.describe_value(value)


def _read(path: Path) -> dict:
    try:
        if path.is_dir():
            raise WorkbenchError("expected a sweep file, found a directory", source=path)
        size = path.stat().st_size
        if size > MAX_SWEEP_BYTES:
            raise WorkbenchError(f"expected a sweep file of at most {MAX_SWEEP_BYTES} bytes, found {size}", source=path)
        raw = path.read_bytes()[: MAX_SWEEP_BYTES + 1]
    except OSError as exc:
        raise WorkbenchError(f"cannot read the file ({exc.strerror or exc})", source=path) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"expected UTF-8 text, found a byte 0x{raw[exc.start]:02x} at offset {exc.start}",
                             source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise WorkbenchError(f"expected valid TOML, found a syntax error: {exc}", source=path) from None
    except (ValueError, RecursionError) as exc:
        raise WorkbenchError(f"expected plain TOML values, found one that cannot be read ({type(exc).__name__})",
                             source=path) from None


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> WorkbenchError:
        return WorkbenchError(message, source=self.path, key=key)

    def run_option(self, key: str, name: str, value: Any) -> Any:
        _, kind, lo, hi = RUN_OPTIONS[name]
        if kind == "str":
            if not isinstance(value, str):
                raise self.fail(key, f"expected a string, found {_describe(value)}")
            choices = _CHOICES[name]
            if value not in choices:
                raise self.fail(key, f"expected one of {', '.join(choices)}, found {_describe(value)}"
                                     f"{did_you_mean(value, choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, found {_describe(value)}")
        if not lo <= value <= hi:
            raise self.fail(key, f"expected an integer in [{lo}, {hi}], found {_describe(value)}")
        return value

    def name(self, key: str, name: str) -> bool:
        """True for a chip-profile key, False for a run option; anything else is an error."""
        head = name.split(".", 1)[0]
        if name in RUN_OPTIONS:
            return False
        if head in CHIP_SECTIONS:
            return True
        options = [*RUN_OPTIONS, *CHIP_SECTIONS]
        raise self.fail(key, f"expected a run option ({', '.join(RUN_OPTIONS)}) or a chip key "
                             f"(section.key, sections {', '.join(CHIP_SECTIONS)}), found {name!r}"
                             f"{did_you_mean(head, options)}")


def _axes_leaves(table: dict, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """Dotted names of [axes] entries: a bare dotted key (tile.sram_kib = [..]) nests in TOML; undo that."""
    out = []
    for key, value in table.items():
        if isinstance(value, dict) and depth < 3:
            out += _axes_leaves(value, f"{prefix}{key}.", depth + 1)
        else:
            out.append((f"{prefix}{key}", value))
    return out


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and expand a sweep file; every problem is one WorkbenchError naming the file and key."""
    path = Path(path)
    doc = _read(path)
    check = _Checker(path)
    for key in doc:
        if key not in TOP_KEYS:
            raise check.fail(key, f"expected one of {', '.join(TOP_KEYS)}, found an unknown key{did_you_mean(key, TOP_KEYS)}")

    if "base_chip" not in doc:
        raise check.fail("base_chip", "expected a bundled chip name or a profile path, found none (missing key)")
    base = doc["base_chip"]
    if not isinstance(base, str):
        raise check.fail("base_chip", f"expected a bundled chip name or a profile path, found {_describe(base)}")
    try:
        base_path = resolve("chips", base, (".toml",), base=path.parent)
    except WorkbenchError as exc:
        raise check.fail("base_chip", str(exc)) from None
    except (ValueError, OSError) as exc:
        raise check.fail("base_chip", f"expected a chip name or a file path, found an unusable one ({exc})") from None

    models = _models(check, doc.get("models"))
    overrides = _fixed_chip(check, doc.get("chip", {}))
    options = _fixed_options(check, doc.get("options", {}))
    axes = _axes(check, doc.get("axes", {}), overrides, options)
    n_points = len(models) * math.prod(len(a.values) for a in axes)
    if n_points > MAX_POINTS:
        raise check.fail("axes", f"expected at most {MAX_POINTS:,} grid points, found {n_points:,}")
    variants = _variants(check, base_path, overrides, [a for a in axes if a.is_chip])
    for name, (default, *_rest) in RUN_OPTIONS.items():
        options.setdefault(name, default)
    sweep = Sweep(path, base_path, models, axes, options, overrides, variants)
    sweep.fingerprint = _fingerprint(sweep)
    return sweep


def _models(check: _Checker, value: Any) -> list[tuple[str, ModelConfig]]:
    from ..model.specs import load_spec

    if value is None:
        raise check.fail("models", "expected a list of model spec names or paths, found none (missing key)")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise check.fail("models", f"expected a non-empty list of model spec names or paths, found {_describe(value)}")
    if len(value) > MAX_MODELS:
        raise check.fail("models", f"expected at most {MAX_MODELS} models, found {len(value)}")
    out = []
    for i, name in enumerate(value):
        key = f"models[{i}]"
        if not isinstance(name, str):
            raise check.fail(key, f"expected a model spec name or path, found {_describe(name)}")
        if name in (label for label, _ in out):
            raise check.fail(key, f"expected each model once, found {name!r} twice")
        local = check.path.parent / name
        try:
            config = load_spec(local if local.exists() else name)
        except WorkbenchError as exc:
            raise check.fail(key, str(exc)) from None
        except (ValueError, OSError) as exc:
            raise check.fail(key, f"expected a model spec name or path, found an unusable one ({exc})") from None
        out.append((name, config))
    return out


def _fixed_chip(check: _Checker, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise check.fail("chip", f"expected a [chip] table of profile overrides, found {_describe(table)}")
    out = {}
    for name, value in _axes_leaves(table):
        check.name(f"chip.{name}", name)
        if "." not in name:
            raise check.fail(f"chip.{name}", "expected section.key (e.g. \"tile.sram_kib\"), found a bare section")
        out[name] = value
    return out


def _fixed_options(check: _Checker, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise check.fail("options", f"expected an [options] table of run options, found {_describe(table)}")
    out = {}
    for name, value in table.items():
        if name not in RUN_OPTIONS:
            raise check.fail(f"options.{name}", f"expected one of {', '.join(RUN_OPTIONS)}, found an unknown key"
                                                f"{did_you_mean(name, RUN_OPTIONS)}")
        out[name] = check.run_option(f"options.{name}", name, value)
    return out


def _axes(check: _Checker, table: Any, overrides: dict, options: dict) -> list[Axis]:
    if not isinstance(table, dict):
        raise check.fail("axes", f"expected an [axes] table, found {_describe(table)}")
    axes: list[Axis] = []
    for name, values in _axes_leaves(table):
        key = f"axes.{name}"
        is_chip = check.name(key, name)
        if not isinstance(values, list) or not values:
            raise check.fail(key, f"expected a non-empty array of values, found {_describe(values)}")
        if len(values) > MAX_AXIS_VALUES:
            raise check.fail(key, f"expected at most {MAX_AXIS_VALUES} values, found {len(values)}")
        if name in overrides or name in options:
            where = "[chip]" if name in overrides else "[options]"
            raise check.fail(key, f"expected a key either swept or fixed in {where}, found it in both")
        clash = next((a.name for a in axes if a.name.startswith(name + ".") or name.startswith(a.name + ".")), None)
        if clash is not None or any(k.startswith(name + ".") or name.startswith(k + ".") for k in overrides):
            raise check.fail(key, f"expected axes over separate keys, found it overlapping {clash or 'a [chip] key'}")
        if is_chip:
            for i, v in enumerate(values):
                if isinstance(v, list):
                    raise check.fail(f"{key}[{i}]", f"expected a value or a table, found {_describe(v)}")
            if "." not in name and not all(isinstance(v, dict) for v in values):
                raise check.fail(key, f"expected tables of {name} keys for a whole-section axis, found "
                                      f"{_describe(next(v for v in values if not isinstance(v, dict)))}")
        else:
            values = [check.run_option(f"{key}[{i}]", name, v) for i, v in enumerate(values)]
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise check.fail(key, "expected distinct values, found a repeated one")
        axes.append(Axis(name, tuple(values), is_chip))
    return axes


def _variants(check: _Checker, base_path: Path, overrides: dict, chip_axes: list[Axis]) -> list[ChipSpec]:
    """One ChipSpec per combination of chip-axis values, each built and validated by the chip loader itself."""
    count = math.prod(len(a.values) for a in chip_axes)
    if count > MAX_CHIP_VARIANTS:
        raise check.fail("axes", f"expected at most {MAX_CHIP_VARIANTS:,} chip variants, found {count:,}")
    base_doc, base_origins = chipmod.profile_document(base_path)
    variants = []
    for combo in itertools.product(*(range(len(a.values)) for a in chip_axes)):
        dotted = dict(overrides)
        for axis, d in zip(chip_axes, combo):
            value = axis.values[d]
            dotted.update({f"{axis.name}.{k}": v for k, v in _flatten(value).items()} if isinstance(value, dict)
                          else {axis.name: value})
        # keys set by the sweep are reported against the sweep file, the rest against the profile
        origins = {**base_origins, **{k: check.path for k in dotted}}
        try:
            variants.append(chipmod.derive_chip(base_doc, base_path, origins, _nest(dotted)))
        except ProfileError as exc:
            where = ", ".join(f"{a.name}={_show(a.values[d])}" for a, d in zip(chip_axes, combo))
            message = str(exc)
            prefix = f"{exc.source}: {exc.key}: " if exc.key else f"{exc.source}: "
            message = message.removeprefix(prefix)
            key = _blame(exc.key or "", chip_axes, overrides)
            detail = f"{exc.key}: {message}" if exc.key else message
            raise check.fail(key, f"expected a valid chip profile at {where or 'every point'}, found {detail}") from None
    return variants


def _blame(bad: str, chip_axes: list[Axis], overrides: dict) -> str:
    """The sweep key to name for a profile error at ``bad``: its axis, else an axis or override in its section."""
    section = bad.split(".", 1)[0]
    for test in (lambda k: bad == k or bad.startswith(k + ".") or k.startswith(bad + "."),
                 lambda k: k.split(".", 1)[0] == section):
        axis = next((a.name for a in chip_axes if test(a.name)), None)
        if axis:
            return f"axes.{axis}"
        fixed = next((k for k in overrides if test(k)), None)
        if fixed:
            return f"chip.{fixed}"
    return "axes" if chip_axes else ("chip" if overrides else "base_chip")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v!r}" for k, v in _flatten(value).items()) + "}"
    return repr(value)


def _fingerprint(sweep: Sweep) -> str:
    """Hash of everything a result row depends on: the base profile, models, overrides, options, axes."""
    base_doc, _ = chipmod.profile_document(sweep.base_chip)
    payload = {
        "format": FORMAT_VERSION,
        "base_chip": base_doc,
        "models": [(label, vars(cfg)) for label, cfg in sweep.models],
        "chip": sweep.chip_overrides,
        "options": sweep.options,
        "axes": [(a.name, list(a.values)) for a in sweep.axes],
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
