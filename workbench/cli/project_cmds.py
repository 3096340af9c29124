"""``asicbench project`` (a model on a chip system, in milliseconds) and ``asicbench calibrate``."""

from __future__ import annotations

import json

import typer

from . import fail


def _si(value: float | None, unit: str) -> str:
    from .report import _si as si

    return "—" if value is None else si(value, unit)


def project_cmd(
    chip: str = typer.Option(..., "--chip", help="Chip or system profile (bundled name or .toml path)."),
    model: str = typer.Option(..., "--model", help="Model spec (models/*.toml) or model file."),
    precision: str = typer.Option("int8", "--precision", help="int8, int4, ternary, binary, fp16, bf16, f32 or fp8."),
    batch: int = typer.Option(1, "--batch", help="Sequences decoded together."),
    prompt_len: int = typer.Option(128, "--prompt-len", help="Prompt tokens per sequence."),
    gen_len: int = typer.Option(128, "--gen-len", help="Generated tokens per sequence."),
    chips: int = typer.Option(0, "--chips", help="Chips to use (0 = the profile's system)."),
    mapping: str = typer.Option("auto", "--mapping", help="Across chips: auto, tensor, pipeline or hybrid."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Project a model onto a chip system: TTFT, tokens/s (per user, aggregate, end to end with the batch's
    prefill), J/token, W, phases, binding limit, memory fit."""
    from ..chip import load_chip
    from ..model.specs import load_spec
    from ..projection import project

    if chips < 0:
        raise fail(f"--chips must be 0 (the profile's system) or more, got {chips}")
    p = project(load_chip(chip), load_spec(model), precision=precision, batch=batch, prompt_len=prompt_len,
                gen_len=gen_len, chips=chips or None, mapping=mapping, end_to_end=True)
    if as_json:
        print(json.dumps(p.to_dict(), indent=2))
        return
    _print_projection(p)


def _print_projection(p) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{p.model} on {p.chips} x {p.chip} — {p.precision}, {p.mapping}, batch {p.batch},"
                    f" prompt {p.prompt_len}, gen {p.gen_len}", show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [("time to first token", _si(p.ttft_s, "s")), ("time per token", _si(p.seconds_per_token, "s")),
            ("tokens/s per user", f"{p.tokens_per_s_per_user:,.1f}"), ("tokens/s aggregate", f"{p.tokens_per_s:,.1f}"),
            ("prefill of the batch", _si(p.prefill_s, "s")),
            ("tokens/s end to end", f"{p.e2e_tokens_per_s:,.1f}"),
            ("energy per token", _si(p.joules_per_token, "J")), ("average power", _si(p.watts, "W")),
            ("binding limit", f"[bold]{p.bound}[/bold]")]
    for name, v in p.phases_s.items():
        rows.append((f"  {name}", _si(v, "s")))
    for name in ("weights", "kv", "activations", "capacity"):
        rows.append((f"{name} per chip", _si(p.fit[name], "B")))
    if not p.fits:
        need = int(p.fit["chips_needed"])
        rows.append(("[red]fits[/red]", f"[red]no — about {need:,} chips needed[/red]" if need else "[red]no[/red]"))
    for k, v in rows:
        t.add_row(k, v)
    con = Console()
    con.print(t)
    for note in p.notes:
        con.print(f"note: {note}")


def calibrate_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Project every published result we have a profile for; print published vs projected and the ratio."""
    from ..calibrate import METRICS, calibrate

    r = calibrate()
    if as_json:
        print(json.dumps(r, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Calibration: projected / published (target {r['band'][0]}x-{r['band'][1]}x)")
    for col in ("src", "model", "system", "prec", "B", "ISL/OSL", "metric", "published", "projected", "ratio"):
        t.add_column(col, justify="right" if col in ("B", "published", "projected", "ratio") else "left")
    for x in r["rows"]:
        ratio = "—" if x["ratio"] is None else f"{x['ratio']:.2f}"
        style = "" if x["within"] else "[red]"
        system = x["chip"] + (f" ({x['chips']} chips)" if x["chips"] else "")
        t.add_row(x["source"], x["model"], system, x["precision"], str(x["batch"]), f"{x['prompt_len']}/{x['gen_len']}",
                  METRICS[x["metric"]], f"{x['published']:g}", "—" if x["projected"] is None else f"{x['projected']:.4g}",
                  f"{style}{ratio}")
    con = Console()
    con.print(t)
    med = r["median_error"]
    con.print(f"median error {100 * med:.1f} %; {r['outside']} of {len(r['rows'])} rows outside the band")


def register(app: typer.Typer) -> None:
    app.command("project")(project_cmd)
    app.command("calibrate")(calibrate_cmd)
