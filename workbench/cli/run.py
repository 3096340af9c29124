"""``asicbench run`` (headless generation with a summary) and ``asicbench compile`` (plan + disassembly)."""

from __future__ import annotations

import json
import sys
import time

import typer

from ..bench import DEFAULT_CHIP, DEFAULT_MODEL, DEFAULT_PROMPT, Bench, BenchOptions
from ..errors import WorkbenchError
from . import fail


def _options(chip, model, tokenizer, precision, mapping, batch, prompt, temperature, seed, context) -> BenchOptions:
    if batch < 1:
        raise fail(f"--batch must be at least 1, got {batch}")
    if temperature < 0:
        raise fail(f"--temperature must be 0 or more, got {temperature}")
    if context < 0:
        raise fail(f"--context must be 0 (the model's) or more, got {context}")
    if not 0 <= seed < 2**64:  # the sampler's xorshift state is one uint64
        raise fail(f"--seed must be in 0..2^64-1, got {seed}")
    return BenchOptions(chip=chip, model=model, tokenizer=tokenizer, precision=precision, mapping=mapping, batch=batch,
                        prompt=prompt, temperature=temperature, seed=seed, context=context)


def summary(bench: Bench, host_seconds: float) -> dict:
    """The figures a run reports, all derived from the machine's counters and the cost model."""
    m = bench.machine
    snap = m.snapshot()
    c = snap.counters
    decode = [h for h in m.history if not h.prefill]
    n_tok = len(m.generated[0])
    dec_s = sum(h.seconds for h in decode)
    dec_j = sum(h.joules for h in decode)
    s_per_tok = dec_s / len(decode) if decode else (m.history[0].seconds if m.history else 0.0)
    kv_s, kv_x = m.kv_occupancy()
    plan = m.plan
    used = plan.weight_bytes + plan.staging_bytes + plan.act_bytes + plan.kv_bytes
    links = c.link_bytes
    hot = int(links.argmax()) if links.size else 0
    B = m.options.batch
    return {
        "chip": bench.chip.name,
        "system_chips": bench.chip.system.chips,  # the emulator runs one chip; `project` covers the system
        "model": bench.model.config.name,
        "precision": m.options.precision,
        "mapping": plan.mapping,
        "batch": B,
        "prompt_tokens": len(m.prompt),
        "tokens": m.generated[0],
        "text": bench.text(0),
        "ttft_s": m.ttft_s or 0.0,
        "seconds_per_token": s_per_tok,
        "tokens_per_s_per_user": 1.0 / s_per_tok if s_per_tok else 0.0,
        "tokens_per_s": B / s_per_tok if s_per_tok else 0.0,
        "joules_per_token": (dec_j / (len(decode) * B)) if decode else snap.joules / max(n_tok * B, 1),
        "watts": snap.joules / snap.seconds if snap.seconds else 0.0,
        "host_tokens_per_s": n_tok * B / host_seconds if host_seconds > 0 else 0.0,
        "sram_used_fraction": float(used.sum() / (bench.chip.sram_bytes_per_tile * plan.n_tiles)),
        "kv_tokens_sram": int(kv_s.sum()),
        "kv_tokens_spilled": int(kv_x.sum()),
        "hottest_link": {"tile": hot // 4, "direction": plan.topology.link_label(hot),
                         "bytes": int(links.max()) if links.size else 0},
        "chip_seconds": snap.seconds,
        "joules": snap.joules,
        "energy_pj": snap.energy_pj,
        "counters": {
            "macs": int(c.tile_macs.sum()),
            "vector_ops": int(c.tile_vec.sum()),
            "sram_read_bytes": int(c.sram_rd.sum()),
            "sram_write_bytes": int(c.sram_wr.sum()),
            "offchip_read_bytes": int(c.off_rd.sum()),
            "offchip_write_bytes": int(c.off_wr.sum()),
            "link_bytes": int(c.link_bytes.sum()),
            "hop_bytes": int(c.hop_bytes[0]),
            "sent_bytes": int(c.sent.sum()),
            "received_bytes": int(c.recv.sum()),
            "cycles": c.cycles,
        },
    }


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        chip: str = typer.Option(DEFAULT_CHIP, "--chip", help="Bundled chip name or profile path."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="Bundled model name or a .gguf/.bin/safetensors path."),
        tokenizer: str = typer.Option(None, "--tokenizer", help="tokenizer.bin for a llama2.c checkpoint."),
        prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", help="Text to continue ('' = BOS alone; ids for models without a tokenizer)."),
        n: int = typer.Option(32, "-n", help="Tokens to generate."),
        precision: str = typer.Option("int8", "--precision", help="f32|fp16|bf16|int8|int4|ternary|binary."),
        mapping: str = typer.Option("auto", "--mapping", help="tensor|pipeline|hybrid|auto."),
        batch: int = typer.Option(1, "--batch", help="Sequences at once."),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
        seed: int = typer.Option(0, "--seed"),
        context: int = typer.Option(0, "--context", help="Tokens of context to plan for (0 = the model's)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text and a table."),
    ) -> None:
        """Generate text on an emulated chip and report time, energy and traffic from its counters."""
        if n < 0:
            raise fail(f"-n must be 0 or more, got {n}")
        bench = Bench(_options(chip, model, tokenizer, precision, mapping, batch, prompt, temperature, seed, context))
        m = bench.machine
        if len(m.prompt) + n > m.plan.context:
            raise fail(f"prompt ({len(m.prompt)} tokens) + -n {n} exceeds the context of {m.plan.context} tokens")
        printed = [0]

        def stream(machine, toks):
            if as_json:
                return
            text = bench.text(0)
            sys.stdout.write(text[printed[0]:])
            sys.stdout.flush()
            printed[0] = len(text)

        if not as_json:
            sys.stdout.write(bench.decode(m.prompt) if bench.model.tokenizer else " ".join(map(str, m.prompt)) + " | ")
        t0 = time.perf_counter()
        try:
            m.generate(n, stream)
        except KeyboardInterrupt:
            print(f"\ninterrupted after {len(m.generated[0])} tokens", file=sys.stderr)
            raise typer.Exit(130)
        host = time.perf_counter() - t0
        result = summary(bench, host)
        if as_json:
            print(json.dumps(result, sort_keys=True))
            return
        print()
        from .report import print_summary

        print_summary(result)

    @app.command("compile")
    def compile_cmd(
        chip: str = typer.Option(DEFAULT_CHIP, "--chip"),
        model: str = typer.Option(DEFAULT_MODEL, "--model"),
        precision: str = typer.Option("int8", "--precision"),
        mapping: str = typer.Option("auto", "--mapping"),
        batch: int = typer.Option(1, "--batch"),
        context: int = typer.Option(0, "--context"),
        ops: int = typer.Option(0, "--ops", help="Print only the first N ops of the program (0 = all)."),
    ) -> None:
        """Show the plan (what each tile's SRAM holds) and the disassembled program of one decode step."""
        if ops < 0:
            raise fail(f"--ops must be 0 (all) or more, got {ops}")
        bench = Bench(_options(chip, model, None, precision, mapping, batch, "", 0.0, 0, context))
        m = bench.machine
        for line in m.plan.describe():
            print(line)
        kv = m.plan.kv_capacity
        print(f"KV cache: {kv.shape[0]} layers x {kv.shape[1]} kv-heads, {int(kv.min())}-{int(kv.max())} tokens per"
              f" sequence in SRAM of {m.plan.context} planned; {m.plan.kv_bytes_per_token} B per token per head")
        for line in m.plan.accumulator_bounds():
            print(f"accumulators: {line}")
        n_ops = len(m.program.ops)
        print(f"\nprogram: {n_ops} ops, {len(m.program.transfers)} transfers per step")
        for line in m.program.disassemble(0, min(n_ops, ops) if ops else None):
            print(line)


__all__ = ["register", "summary", "WorkbenchError"]
