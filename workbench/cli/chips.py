"""``asicbench chips``: list the bundled chip profiles, show one in full, check a profile file."""

from __future__ import annotations

import json
import math

import typer
from rich.console import Console
from rich.table import Table

from ..chip import ChipSpec, bundled_chips, load_chip
from ..precision import CHIP_PRECISIONS

app = typer.Typer(
    help="Chip profiles: list the bundled ones, show one in full, check a profile file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_SECTIONS = ("mesh", "tile", "memory", "noc", "host", "system", "energy", "realism")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:.0f} B"


def _rate(n: float, unit: str) -> str:
    """Decimal SI prefix: 3.35e12 B/s -> '3.35 TB/s'."""
    if n == 0:
        return f"0 {unit}"
    if math.isinf(n):
        return "inf"
    for prefix, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.4g} {prefix}{unit}"
    return f"{n:.4g} {unit}"


def _offchip(chip: ChipSpec) -> str:
    if not chip.has_offchip:
        return "none (SRAM only)"
    return f"{_bytes(chip.offchip_bytes)} {chip.memory.kind.upper()} @ {_rate(chip.offchip_bytes_per_s, 'B/s')}"


@app.command("list")
def list_chips() -> None:
    """One line per bundled chip profile."""
    table = Table(title="Bundled chip profiles", title_justify="left")
    table.add_column("name", no_wrap=True)
    for header, justify in (("tiles", "right"), ("SRAM", "right"), ("off-chip memory", "left"),
                            ("peak int8", "right"), ("static W", "right"), ("chips", "right")):
        table.add_column(header, justify=justify)
    for name in bundled_chips():
        chip = load_chip(name)
        int8 = chip.peak_ops_per_s("int8")
        native = chip.native_precision("int8")
        int8_text = _rate(int8, "OPS") + ("" if native == "int8" else f" ({native})")
        table.add_row(name, f"{chip.n_tiles:,}", _bytes(chip.sram_bytes), _offchip(chip), int8_text,
                      f"{chip.energy.static_w:g}", f"{chip.system.chips:,}")
    _console().print(table)


def _section_rows(chip: ChipSpec, name: str) -> list[tuple[str, str, str]]:
    rows = []
    for key, value in chip.to_dict()[name].items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                dotted = f"{name}.{key}.{sub}" if name == "tile" else f"{name}.pj_per_mac_{sub}"
                rows.append((dotted, f"{subvalue:g}", chip.source.get(dotted, "")))
            continue
        dotted = f"{name}.{key}"
        text = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        rows.append((dotted, text, chip.source.get(dotted, "")))
    return rows


@app.command("show")
def show(
    name: str = typer.Argument(..., help="A bundled chip name or a profile path."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile and its derived figures as JSON."),
) -> None:
    """Every parameter of a chip, its derived figures and the sources behind them."""
    chip = load_chip(name)
    if as_json:
        doc = chip.to_dict()
        doc["derived"] = chip.derived()
        print(json.dumps(doc, indent=2))
        return
    console = _console()
    console.print(f"[bold]{chip.name}[/bold]  {chip.vendor}, {chip.process_nm:g} nm, {chip.clock_ghz:g} GHz, "
                  f"{chip.die_mm2:g} mm2  ({chip.path})")
    if chip.notes:
        console.print(chip.notes)
    params = Table(title="Parameters", title_justify="left", show_lines=False)
    params.add_column("key")
    params.add_column("value", justify="right")
    params.add_column("source", overflow="fold")
    for key in ("process_nm", "clock_ghz", "die_mm2"):
        params.add_row(f"chip.{key}", f"{getattr(chip, key):g}", chip.source.get(f"chip.{key}", ""))
    for name_ in _SECTIONS:
        note = chip.source.get(name_)
        if note:
            params.add_row(f"[dim]{name_}[/dim]", "", note)
        for row in _section_rows(chip, name_):
            params.add_row(*row)
    console.print(params)

    derived = Table(title="Derived (per chip)", title_justify="left")
    derived.add_column("figure")
    derived.add_column("value", justify="right")
    derived.add_row("tiles / physical cores", f"{chip.n_tiles:,} / {chip.physical_cores:,}")
    derived.add_row("SRAM (per tile / chip)", f"{_bytes(chip.sram_bytes_per_tile)} / {_bytes(chip.sram_bytes)}")
    derived.add_row("SRAM bandwidth", _rate(chip.sram_bytes_per_s, "B/s"))
    derived.add_row("NoC bisection bandwidth", _rate(chip.noc_bisection_bytes_per_s, "B/s"))
    derived.add_row("off-chip memory", _offchip(chip))
    console.print(derived)

    peaks = Table(title="Peak compute and ridge point", title_justify="left")
    for header in ("precision", "runs on", "MACs/cycle/tile", "peak ops/s", "ridge ops/B"):
        peaks.add_column(header, justify="left" if header in ("precision", "runs on") else "right")
    ridge_over = "off-chip" if chip.has_offchip else "SRAM"
    for prec in CHIP_PRECISIONS:
        native = chip.native_precision(prec)
        if native is None:
            continue
        peaks.add_row(prec, native, f"{chip.macs_per_cycle(prec):,}", _rate(chip.peak_ops_per_s(prec), "OPS"),
                      f"{chip.ridge_ops_per_byte(prec):,.1f}")
    peaks.caption = f"ridge = peak ops/s / {ridge_over} bytes/s"
    console.print(peaks)

    if chip.system.chips > 1:
        system = Table(title=f"System ({chip.system.chips:,} chips, {chip.system.topology})", title_justify="left")
        system.add_column("figure")
        system.add_column("value", justify="right")
        for prec in ("fp16", "int8"):
            system.add_row(f"peak {prec}", _rate(chip.system_peak_ops_per_s(prec), "OPS"))
        system.add_row("SRAM", _bytes(chip.system_sram_bytes))
        system.add_row("off-chip memory", _bytes(chip.system_offchip_bytes) if chip.has_offchip else "none")
        system.add_row("off-chip bandwidth", _rate(chip.system_offchip_bytes_per_s, "B/s"))
        system.add_row("static power", f"{chip.system_static_w:,.0f} W")
        console.print(system)

    other = {k: v for k, v in chip.source.items()
             if k.split(".")[0] not in (*_SECTIONS, "tile") and not k.startswith("chip.")}
    if other:
        sources = Table(title="Other sources", title_justify="left")
        sources.add_column("key")
        sources.add_column("source", overflow="fold")
        for key, value in other.items():
            sources.add_row(key, value)
        console.print(sources)


@app.command("check")
def check(path: str = typer.Argument(..., help="A chip profile (TOML) to validate.")) -> None:
    """Validate a profile: exit 0 with a one-line summary, or exit 2 with the one-line error."""
    chip = load_chip(path)
    native = chip.native_precision("int8")
    print(
        f"ok: {chip.name}: {chip.n_tiles:,} tiles, {_bytes(chip.sram_bytes)} SRAM, off-chip {_offchip(chip)}, "
        f"peak int8 {_rate(chip.peak_ops_per_s('int8'), 'OPS')}"
        + ("" if native == "int8" else f" (on {native})")
        + f", {chip.system.chips:,} chip(s)"
    )
