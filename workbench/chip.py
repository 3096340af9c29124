"""Chip profiles: the TOML schema, its strict loader, and the frozen ChipSpec the compiler and cost model read.

A profile describes one chip as an emulation grid of tiles (each tile may stand for many
physical cores), plus off-chip memory, NoC, host link, a multi-chip system and an energy table.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from .data import did_you_mean, resolve
from .errors import ProfileError, WorkbenchError
from .precision import CHIP_PRECISIONS, FALLBACK

MAX_PROFILE_BYTES = 256 * 1024  # a real profile is a few KiB; refuse anything far bigger before parsing
MAX_EXTENDS_DEPTH = 8
MAX_TILES = 10**7
MAX_CHIPS = 10**6
MESH_TOPOLOGIES = ("mesh", "torus", "ring", "crossbar")
SYSTEM_TOPOLOGIES = ("single", "ring", "torus", "mesh", "fully_connected", "dragonfly", "switch")
MEMORY_KINDS = ("none", "hbm2", "hbm2e", "hbm3", "hbm3e", "gddr6", "gddr6x", "gddr7",
                "lpddr4", "lpddr4x", "lpddr5", "lpddr5x", "ddr4", "ddr5")


class FrozenMap(Mapping):
    """A read-only, hashable mapping (so a ChipSpec can be a cache key)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping | None = None):
        self._items = dict(items or {})

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


@dataclass(frozen=True)
class MeshSpec:
    rows: int
    cols: int
    topology: str  # "mesh" | "torus" | "ring"
    cores_per_tile: int = 1   # physical cores one emulation tile stands for (WSE-3: ~1000)
    physical_cores: int = 0   # 0 -> rows*cols*cores_per_tile
    tensor_group_tiles: int = 64  # the most tiles one tensor-parallel group spans (compiler.MAX_GROUP_TILES)


@dataclass(frozen=True)
class TileSpec:
    sram_kib: float
    macs_per_cycle: Mapping[str, int]  # precision -> MACs/cycle for ONE tile (summed over its cores)
    vector_lanes: int
    sram_bytes_per_cycle: int  # SRAM read bandwidth of one tile


@dataclass(frozen=True)
class MemorySpec:
    kind: str
    capacity_gib: float  # 0 = SRAM only
    bandwidth_gb_per_s: float
    latency_ns: float


@dataclass(frozen=True)
class NocSpec:
    link_bytes_per_cycle: float  # one direction of one tile-to-tile link
    hop_latency_cycles: float


@dataclass(frozen=True)
class HostSpec:
    interface: str
    bandwidth_gb_per_s: float  # one direction


@dataclass(frozen=True)
class SystemSpec:
    chips: int = 1
    chip_link_gb_per_s: float = 0.0   # per chip, per direction, all its chip-to-chip links together
    chip_link_latency_us: float = 0.0
    topology: str = "single"  # single|ring|torus|mesh|fully_connected|dragonfly|switch


@dataclass(frozen=True)
class EnergySpec:
    pj_per_mac: Mapping[str, float]
    pj_per_byte_sram_read: float
    pj_per_byte_sram_write: float
    pj_per_byte_dram: float
    pj_per_byte_hop: float
    pj_per_byte_chip_link: float
    static_w: float  # static W per chip


@dataclass(frozen=True)
class RealismSpec:
    """Documented knobs, the same for every model on a chip (no per-model factors)."""

    compute_efficiency: float = 1.0      # achievable fraction of peak MAC rate
    memory_efficiency: float = 1.0       # achievable fraction of off-chip bandwidth
    noc_efficiency: float = 1.0
    chip_link_efficiency: float = 1.0
    op_overhead_cycles: float = 0.0      # fixed cost per op (dispatch)
    block_cols: int = 1                  # columns a tile streams through an op as one block (see cost.py)
    collective_overhead_us: float = 0.0  # fixed cost per chip-to-chip collective


@dataclass(frozen=True)
class ChipSpec:
    name: str
    vendor: str
    process_nm: float
    clock_ghz: float
    die_mm2: float
    notes: str
    mesh: MeshSpec
    tile: TileSpec
    memory: MemorySpec
    noc: NocSpec
    host: HostSpec
    system: SystemSpec
    energy: EnergySpec
    realism: RealismSpec
    source: Mapping[str, str]  # dotted key -> citation / derivation note
    path: str                  # file it was loaded from

    def __hash__(self) -> int:
        """The dataclass field hash, computed once: the cost model keys its per-chip caches on the spec."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}  # str hashes differ between processes

    # -- per chip ---------------------------------------------------------------------------
    @property
    def clock_hz(self) -> float:
        return self.clock_ghz * 1e9

    @property
    def n_tiles(self) -> int:
        return self.mesh.rows * self.mesh.cols

    @property
    def physical_cores(self) -> int:
        return self.mesh.physical_cores or self.n_tiles * self.mesh.cores_per_tile

    @property
    def sram_bytes_per_tile(self) -> int:
        return int(self.tile.sram_kib * 1024)

    @property
    def sram_bytes(self) -> int:
        return self.sram_bytes_per_tile * self.n_tiles

    @property
    def has_offchip(self) -> bool:
        return self.memory.capacity_gib > 0

    @property
    def offchip_bytes(self) -> int:
        return int(self.memory.capacity_gib * 2**30)

    @property
    def offchip_bytes_per_s(self) -> float:
        return self.memory.bandwidth_gb_per_s * 1e9 if self.has_offchip else 0.0

    def native_precision(self, prec: str) -> str | None:
        """The precision whose MAC unit runs ``prec`` (itself, or the next wider one per FALLBACK)."""
        p: str | None = prec
        while p is not None:
            if self.tile.macs_per_cycle.get(p, 0) > 0:
                return p
            p = FALLBACK[p]
        return None

    def macs_per_cycle_native(self, prec: str) -> int:
        """MACs/cycle of one tile on a native ``prec`` unit, 0 when the chip has none."""
        return int(self.tile.macs_per_cycle.get(prec, 0))

    def macs_per_cycle(self, prec: str) -> int:
        """MACs/cycle of one tile at ``prec``, falling back to a wider unit; 0 if none."""
        native = self.native_precision(prec)
        return self.macs_per_cycle_native(native) if native else 0

    def pj_per_mac(self, prec: str) -> float:
        """pJ per MAC on the unit that runs ``prec`` (same fallback as the rate)."""
        native = self.native_precision(prec)
        return float(self.energy.pj_per_mac[native]) if native else 0.0

    def peak_ops_per_s(self, prec: str) -> float:
        """Peak ops/s of one chip at ``prec`` (one MAC = 2 ops)."""
        return 2.0 * self.macs_per_cycle(prec) * self.n_tiles * self.clock_hz

    @property
    def sram_bytes_per_s(self) -> float:
        return float(self.tile.sram_bytes_per_cycle) * self.n_tiles * self.clock_hz

    @property
    def noc_bisection_links(self) -> int:
        """Tile-to-tile links one direction crossing a cut of the grid into two halves."""
        r, c = self.mesh.rows, self.mesh.cols
        n = r * c
        if n < 2:
            return 0
        if self.mesh.topology == "ring":
            return 2 if n > 2 else 1
        if self.mesh.topology == "crossbar":  # every port of one half
            return n // 2
        short, long = min(r, c), max(r, c)
        if long < 2:
            return 0
        wrap = 2 if (self.mesh.topology == "torus" and long > 2) else 1
        return short * wrap

    @property
    def noc_bisection_bytes_per_s(self) -> float:
        return self.noc_bisection_links * self.noc.link_bytes_per_cycle * self.clock_hz

    def ridge_ops_per_byte(self, prec: str) -> float:
        """Peak ops per byte of the memory weights stream from: off-chip, or SRAM when SRAM-only."""
        bandwidth = self.offchip_bytes_per_s if self.has_offchip else self.sram_bytes_per_s
        return self.peak_ops_per_s(prec) / bandwidth if bandwidth > 0 else math.inf

    # -- whole system (system.chips of these) ------------------------------------------------
    def system_peak_ops_per_s(self, prec: str) -> float:
        return self.peak_ops_per_s(prec) * self.system.chips

    @property
    def system_sram_bytes(self) -> int:
        return self.sram_bytes * self.system.chips

    @property
    def system_offchip_bytes(self) -> int:
        return self.offchip_bytes * self.system.chips

    @property
    def system_offchip_bytes_per_s(self) -> float:
        return self.offchip_bytes_per_s * self.system.chips

    @property
    def system_sram_bytes_per_s(self) -> float:
        return self.sram_bytes_per_s * self.system.chips

    @property
    def system_static_w(self) -> float:
        return self.energy.static_w * self.system.chips

    def derived(self) -> dict[str, Any]:
        """Every derived figure, in base units, for reports and ``chips show --json``."""
        precs = [p for p in CHIP_PRECISIONS if self.native_precision(p)]
        return {
            "n_tiles": self.n_tiles,
            "physical_cores": self.physical_cores,
            "sram_bytes_per_tile": self.sram_bytes_per_tile,
            "sram_bytes": self.sram_bytes,
            "offchip_bytes": self.offchip_bytes,
            "offchip_bytes_per_s": self.offchip_bytes_per_s,
            "sram_bytes_per_s": self.sram_bytes_per_s,
            "noc_bisection_bytes_per_s": self.noc_bisection_bytes_per_s,
            "native_precision": {p: self.native_precision(p) for p in precs},
            "peak_ops_per_s": {p: self.peak_ops_per_s(p) for p in precs},
            "ridge_ops_per_byte": {p: self.ridge_ops_per_byte(p) for p in precs},
            "system_chips": self.system.chips,
            "system_peak_ops_per_s": {p: self.system_peak_ops_per_s(p) for p in precs},
            "system_sram_bytes": self.system_sram_bytes,
            "system_offchip_bytes": self.system_offchip_bytes,
            "system_offchip_bytes_per_s": self.system_offchip_bytes_per_s,
            "system_static_w": self.system_static_w,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the profile (as loaded, extends resolved)."""

        def plain(obj):
            if isinstance(obj, Mapping):
                return {k: plain(v) for k, v in obj.items()}
            if hasattr(obj, "__dataclass_fields__"):
                return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
            return obj

        return plain(self)


# -- the TOML schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    kind: str                   # "int" | "float" | "str"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False       # lo itself is out of range
    required: bool = True
    choices: tuple[str, ...] = ()


def _f(lo, hi, *, lo_open=False, required=True) -> _Field:
    return _Field("float", lo, hi, lo_open, required)


def _i(lo, hi, *, required=True) -> _Field:
    return _Field("int", lo, hi, False, required)


def _s(*choices: str, required=True) -> _Field:
    return _Field("str", required=required, choices=tuple(choices))


_SCHEMA: dict[str, dict[str, _Field]] = {
    "chip": {"name": _s(), "vendor": _s(), "process_nm": _f(0, 1000, lo_open=True),
             "clock_ghz": _f(0, 100, lo_open=True), "die_mm2": _f(0, 1e6, lo_open=True),
             "notes": _s(required=False)},
    "mesh": {"rows": _i(1, MAX_TILES), "cols": _i(1, MAX_TILES), "topology": _s(*MESH_TOPOLOGIES),
             "cores_per_tile": _i(1, 10**9, required=False), "physical_cores": _i(0, 10**13, required=False),
             "tensor_group_tiles": _i(1, 4096, required=False)},
    "tile": {"sram_kib": _f(0, 2**30, lo_open=True), "vector_lanes": _i(0, 10**9),
             "sram_bytes_per_cycle": _i(1, 10**9)},  # + [tile.macs_per_cycle], checked on its own
    "memory": {"kind": _s(*MEMORY_KINDS), "capacity_gib": _f(0, 1e7), "bandwidth_gb_per_s": _f(0, 1e9),
               "latency_ns": _f(0, 1e9)},
    "noc": {"link_bytes_per_cycle": _f(0, 1e9, lo_open=True), "hop_latency_cycles": _f(0, 1e6)},
    "host": {"interface": _s(), "bandwidth_gb_per_s": _f(0, 1e7, lo_open=True)},
    "system": {"chips": _i(1, MAX_CHIPS, required=False), "chip_link_gb_per_s": _f(0, 1e9, required=False),
               "chip_link_latency_us": _f(0, 1e9, required=False),
               "topology": _s(*SYSTEM_TOPOLOGIES, required=False)},
    "energy": {**{f"pj_per_mac_{p}": _f(0, 1e6, required=False) for p in CHIP_PRECISIONS},
               "pj_per_byte_sram_read": _f(0, 1e6), "pj_per_byte_sram_write": _f(0, 1e6),
               "pj_per_byte_dram": _f(0, 1e6), "pj_per_byte_hop": _f(0, 1e6),
               "pj_per_byte_chip_link": _f(0, 1e6), "static_w": _f(0, 1e7)},
    "realism": {"compute_efficiency": _f(0, 1, lo_open=True, required=False),
                "memory_efficiency": _f(0, 1, lo_open=True, required=False),
                "noc_efficiency": _f(0, 1, lo_open=True, required=False),
                "chip_link_efficiency": _f(0, 1, lo_open=True, required=False),
                "op_overhead_cycles": _f(0, 1e9, required=False),
                "block_cols": _i(1, 4096, required=False),
                "collective_overhead_us": _f(0, 1e9, required=False)},
}
_OPTIONAL_SECTIONS = ("system", "realism", "source")
_TOP_KEYS = (*_SCHEMA, "source", "extends")
_SOURCE_KEYS = frozenset(
    [*_SCHEMA, *(f"{s}.{k}" for s, keys in _SCHEMA.items() for k in keys), "tile.macs_per_cycle",
     *(f"tile.macs_per_cycle.{p}" for p in CHIP_PRECISIONS), "extends"]
)


def _found(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        if abs(value) >= 10**30:
            return f"an integer of about 10^{(abs(value).bit_length() - 1) * 0.30103:.0f}"
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"{text!r} (a string)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


class _Reader:
    """Checks one merged profile document; knows which file each key came from."""

    def __init__(self, top: Path, origins: dict[str, Path]):
        self.top = top
        self.origins = origins

    def fail(self, key: str, message: str) -> ProfileError:
        where = self.origins.get(key)
        if where is None:
            where = next((p for k, p in self.origins.items() if k.startswith(key + ".")), self.top)
        return ProfileError(message, source=where, key=key)

    def table(self, doc: dict, name: str, *, required: bool) -> dict:
        if name not in doc:
            if required:
                raise self.fail(name, f"expected a [{name}] table, found none")
            return {}
        value = doc[name]
        if not isinstance(value, dict):
            raise self.fail(name, f"expected a [{name}] table, found {_found(value)}")
        return value

    def unknown(self, table: dict, prefix: str, allowed) -> None:
        for key in table:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                raise self.fail(f"{prefix}{key}", f"expected one of {', '.join(allowed)}; found an unknown key{hint}")

    def value(self, key: str, value: Any, field: _Field) -> Any:
        if field.kind == "str":
            if not isinstance(value, str):
                raise self.fail(key, f"expected a string, found {_found(value)}")
            if field.choices and value not in field.choices:
                hint = did_you_mean(value, field.choices)
                raise self.fail(key, f"expected one of {', '.join(field.choices)}, found {_found(value)}{hint}")
            if len(value) > 4096:
                raise self.fail(key, f"expected at most 4096 characters, found {len(value)}")
            return value
        if field.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(key, f"expected an integer, found {_found(value)}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(key, f"expected a number, found {_found(value)}")
            if isinstance(value, int) and abs(value) > 10**300:
                raise self.fail(key, f"expected a value in a sane range, found {_found(value)}")
            if not math.isfinite(value):
                raise self.fail(key, f"expected a finite number, found {_found(value)}")
            value = float(value)
        lo_ok = value > field.lo if field.lo_open else value >= field.lo
        if not lo_ok or value > field.hi:
            span = f"{'(' if field.lo_open else '['}{field.lo:g}, {field.hi:g}]"
            raise self.fail(key, f"expected a value in {span}, found {_found(value)}")
        return value

    def section(self, doc: dict, name: str) -> dict[str, Any]:
        schema = _SCHEMA[name]
        table = self.table(doc, name, required=name not in _OPTIONAL_SECTIONS)
        extra = ("macs_per_cycle",) if name == "tile" else ()
        self.unknown(table, f"{name}.", (*schema, *extra))
        out = {}
        for key, field in schema.items():
            if key in table:
                out[key] = self.value(f"{name}.{key}", table[key], field)
            elif field.required:
                raise self.fail(f"{name}.{key}", f"expected a value ({field.kind}), found none (missing key)")
        return out


def _read_toml(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(f"expected a profile of at most {MAX_PROFILE_BYTES} bytes, found {size} bytes", source=path)
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"cannot read the file ({exc.strerror or exc})", source=path) from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"expected a profile of at most {MAX_PROFILE_BYTES} bytes, found more", source=path)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(f"expected UTF-8 text, found a byte 0x{raw[exc.start]:02x} at offset {exc.start}", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"expected valid TOML, found a syntax error: {exc}", source=path) from None
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit
        raise ProfileError(f"expected valid TOML values, found one Python cannot read ({exc})", source=path) from None
    except RecursionError:
        raise ProfileError("expected a flat TOML profile, found nesting too deep to parse", source=path) from None


def _leaves(doc: dict, prefix: str = "", depth: int = 0) -> Iterator[str]:
    for key, value in doc.items():
        if isinstance(value, dict) and depth < 4:
            yield from _leaves(value, f"{prefix}{key}.", depth + 1)
        else:
            yield f"{prefix}{key}"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_document(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, Path]]:
    """The profile at ``path`` with its ``extends`` chain merged in; origins map dotted key -> file."""
    doc = _read_toml(path)
    origins = {key: path for key in _leaves(doc)}
    if "extends" not in doc:
        return doc, origins
    parent_name = doc.pop("extends")
    if not isinstance(parent_name, str):
        raise ProfileError(f"expected a bundled chip name or a path, found {_found(parent_name)}", source=path, key="extends")
    try:
        parent_path = resolve("chips", parent_name, (".toml",), base=path.parent)
    except (WorkbenchError, ValueError, OSError) as exc:
        raise ProfileError(f"expected a chip profile to extend, found none: {exc}", source=path, key="extends") from None
    seen = [p.resolve() for p in (*chain, path)]
    if parent_path.resolve() in seen:
        loop = " -> ".join(p.name for p in (*chain, path, parent_path))
        raise ProfileError(f"expected a chain without cycles, found {loop}", source=path, key="extends")
    if len(chain) + 1 >= MAX_EXTENDS_DEPTH:
        raise ProfileError(f"expected at most {MAX_EXTENDS_DEPTH} levels of extends, found more", source=path, key="extends")
    parent, parent_origins = _load_document(parent_path, (*chain, path))
    return _merge(parent, doc), {**parent_origins, **origins}


def _flatten_source(reader: _Reader, table: dict) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(node: dict, prefix: str, depth: int) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and depth < 3:
                walk(value, f"{dotted}.", depth + 1)
                continue
            if key == "about" and prefix[:-1] in _SCHEMA:
                dotted = prefix[:-1]  # [source] energy.about = "..." notes the whole section
            if dotted not in _SOURCE_KEYS:
                hint = did_you_mean(dotted, _SOURCE_KEYS)
                raise reader.fail(f"source.{dotted}", f"expected a profile key or section to cite, found an unknown key{hint}")
            out[dotted] = reader.value(f"source.{dotted}", value, _s())

    walk(table, "", 0)
    return out


def _build(doc: dict, reader: _Reader, path: Path) -> ChipSpec:
    reader.unknown(doc, "", _TOP_KEYS)
    v = {name: reader.section(doc, name) for name in _SCHEMA}
    tile_table = reader.table(doc, "tile", required=True)
    if "macs_per_cycle" not in tile_table:
        raise reader.fail("tile.macs_per_cycle", "expected a [tile.macs_per_cycle] table, found none")
    macs_table = tile_table["macs_per_cycle"]
    if not isinstance(macs_table, dict):
        raise reader.fail("tile.macs_per_cycle", f"expected a table, found {_found(macs_table)}")
    reader.unknown(macs_table, "tile.macs_per_cycle.", CHIP_PRECISIONS)
    macs = {p: int(reader.value(f"tile.macs_per_cycle.{p}", macs_table[p], _i(0, 10**9)))
            for p in CHIP_PRECISIONS if p in macs_table}
    if not any(macs.values()):
        raise reader.fail("tile.macs_per_cycle", "expected at least one precision with MACs/cycle > 0, found none")

    mesh = v["mesh"]
    if mesh["rows"] * mesh["cols"] > MAX_TILES:
        raise reader.fail("mesh", f"expected at most {MAX_TILES} tiles, found rows*cols = {mesh['rows'] * mesh['cols']}")

    pj_per_mac = {}
    for p in CHIP_PRECISIONS:
        key = f"pj_per_mac_{p}"
        if macs.get(p, 0) > 0 and key not in v["energy"]:
            raise reader.fail(f"energy.{key}", f"expected a pJ/MAC for {p} (the chip has {p} MACs), found none (missing key)")
        if key in v["energy"]:
            if macs.get(p, 0) == 0:
                raise reader.fail(f"energy.{key}", f"expected pJ/MAC only for precisions in [tile.macs_per_cycle], found {p}")
            pj_per_mac[p] = v["energy"].pop(key)

    memory = v["memory"]
    if memory["capacity_gib"] > 0:
        if memory["kind"] == "none":
            raise reader.fail("memory.kind", "expected a memory type when capacity_gib > 0, found 'none'")
        if memory["bandwidth_gb_per_s"] <= 0:
            raise reader.fail("memory.bandwidth_gb_per_s", "expected a bandwidth > 0 when capacity_gib > 0, found 0")
    elif memory["kind"] != "none":
        raise reader.fail("memory.kind", f"expected 'none' when capacity_gib = 0 (SRAM only), found {_found(memory['kind'])}")

    system = SystemSpec(**v["system"])
    if (system.chips == 1) != (system.topology == "single"):
        raise reader.fail("system.topology", f"expected 'single' exactly when chips = 1, found {system.topology!r} with chips = {system.chips}")
    if system.chips > 1 and system.chip_link_gb_per_s <= 0:
        raise reader.fail("system.chip_link_gb_per_s", f"expected a bandwidth > 0 for {system.chips} chips, found 0")

    source_table = reader.table(doc, "source", required=False)
    chip = v["chip"]
    return ChipSpec(
        name=chip["name"], vendor=chip["vendor"], process_nm=chip["process_nm"], clock_ghz=chip["clock_ghz"],
        die_mm2=chip["die_mm2"], notes=chip.get("notes", ""),
        mesh=MeshSpec(**mesh),
        tile=TileSpec(macs_per_cycle=FrozenMap(macs), **v["tile"]),
        memory=MemorySpec(**memory), noc=NocSpec(**v["noc"]), host=HostSpec(**v["host"]), system=system,
        energy=EnergySpec(pj_per_mac=FrozenMap(pj_per_mac), **v["energy"]),
        realism=RealismSpec(**v["realism"]),
        source=FrozenMap(_flatten_source(reader, source_table)),
        path=str(path),
    )


def load_chip(name_or_path: str | Path) -> ChipSpec:
    """Load a bundled chip (file stem in chips/) or a TOML file; every problem is a ProfileError."""
    try:
        path = resolve("chips", name_or_path, (".toml",))
    except WorkbenchError as exc:
        raise ProfileError(str(exc)) from None
    except (ValueError, OSError) as exc:  # e.g. a NUL byte in the name
        raise ProfileError(f"expected a chip name or a file path, found an unusable one ({exc})", source=repr(str(name_or_path))) from None
    doc, origins = _load_document(path, ())
    return _build(doc, _Reader(path, origins), path)


def bundled_chips() -> list[str]:
    """Names of the bundled chip profiles."""
    from .data import bundled_names

    return bundled_names("chips", (".toml",))


# -- deriving variants (design-space sweeps) ---------------------------------------------------------
SECTIONS = tuple(_SCHEMA)  # chip, mesh, tile, memory, noc, host, system, energy, realism
describe_value = _found


def profile_document(path: Path) -> tuple[dict, dict[str, Path]]:
    """The raw document of the profile at ``path`` with its ``extends`` chain merged in, and for each
    dotted key the file it came from."""
    return _load_document(Path(path), ())


def derive_chip(base_doc: dict, base_path: Path, origins: dict[str, Path], overrides: dict) -> ChipSpec:
    """A ChipSpec from ``base_doc`` with nested ``overrides`` merged in, validated exactly as a profile file
    is; ``origins`` names the file each dotted key is reported against in errors."""
    return _build(_merge(base_doc, overrides), _Reader(Path(base_path), origins), Path(base_path))
