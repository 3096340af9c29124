"""Rich rendering of run summaries (the core returns plain dicts; the faces draw them)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _si(value: float, unit: str) -> str:
    if value == 0:
        return f"0 {unit}"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if abs(value) >= factor or factor == 1e-9:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:g} {unit}"


def print_summary(r: dict) -> None:
    t = Table(title=f"{r['model']} on {r['chip']} — {r['precision']}, {r['mapping']} mapping, batch {r['batch']}",
              show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [
        ("time to first token", _si(r["ttft_s"], "s")),
        ("time per token", _si(r["seconds_per_token"], "s")),
        ("tokens/s per user", f"{r['tokens_per_s_per_user']:,.0f}"),
        ("tokens/s aggregate", f"{r['tokens_per_s']:,.0f}"),
        ("energy per token", _si(r["joules_per_token"], "J")),
        ("average power", _si(r["watts"], "W")),
        ("SRAM used", f"{100 * r['sram_used_fraction']:.1f} %"),
        ("KV tokens in SRAM / spilled", f"{r['kv_tokens_sram']:,} / {r['kv_tokens_spilled']:,}"),
        ("hottest link", f"tile {r['hottest_link']['tile']} {r['hottest_link']['direction']}: "
                         f"{_si(r['hottest_link']['bytes'], 'B')}"),
        ("off-chip bytes", _si(r["counters"]["offchip_read_bytes"] + r["counters"]["offchip_write_bytes"], "B")),
        ("emulator speed (host)", f"{r['host_tokens_per_s']:,.0f} tokens/s"),
    ]
    if r.get("system_chips", 1) > 1:
        rows.append(("emulated", f"one chip of a {r['system_chips']}-chip system (asicbench project: all of it)"))
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)
