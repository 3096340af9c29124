"""``asicbench models list|show|quantize``: what models and shape specs there are, what is in one, re-quantize one.

Other modules register more commands (encode/decode, eval) on :data:`app`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import WorkbenchError
from . import fail

app = typer.Typer(help="Models: list, inspect, re-quantize.", no_args_is_help=True, add_completion=False)

_MODEL_SUFFIXES = (".gguf", ".bin", ".safetensors")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _human_count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


@app.command("list")
def list_models() -> None:
    """Bundled models (GGUF: parameters, file size) and shape-only specs."""
    from ..data import bundled_names, data_dir
    from ..model.gguf_io import read_gguf_config
    from ..model.specs import load_spec, spec_names

    folder = data_dir("models")
    print("models (weights):")
    names = bundled_names("models", (".gguf",))
    for name in names:
        path = folder / f"{name}.gguf"
        try:
            params = _human_count(read_gguf_config(path).n_params())
        except WorkbenchError as exc:
            params = f"unreadable: {exc}"
        print(f"  {name:<24} {params:>9}  {_human_bytes(path.stat().st_size):>10}")
    if not names:
        print("  (none)")
    print("shape specs (for projection):")
    for name in spec_names():
        try:
            cfg = load_spec(name)
        except WorkbenchError as exc:
            print(f"  {name:<24} not a spec: {exc}")
            continue
        moe = f", {cfg.n_experts} experts top-{cfg.n_experts_used}" if cfg.is_moe else ""
        print(f"  {name:<24} {_human_count(cfg.n_params()):>9}  {cfg.n_layers} layers, dim {cfg.dim}{moe}")


def _describe(target: str, tokenizer: str | None) -> dict:
    from ..model.quant import storage_bytes
    from ..precision import BITS_PER_WEIGHT, WEIGHT_FORMAT

    is_spec = Path(target).suffix.lower() == ".toml"
    if not is_spec and not Path(target).expanduser().exists():
        from ..data import data_dir

        folder = data_dir("models")
        is_spec = not any((folder / f"{target}{s}").is_file() for s in _MODEL_SUFFIXES) and (
            folder / f"{target}.toml").is_file()
    if is_spec:
        from ..model.specs import load_spec

        cfg = load_spec(target)
        n = cfg.n_params()
        sizes = {p: int(n * BITS_PER_WEIGHT[p] / 8) for p in WEIGHT_FORMAT}
        return {"name": cfg.name, "kind": "shape spec", "config": cfg.__dict__, "parameters": n,
                "bytes_per_precision": sizes, "sizing": "parameters x bits per weight", "tensors": []}
    from ..model.load import load_model

    model = load_model(target, tokenizer=tokenizer)
    tensors = [{"name": k, "type": t.fmt, "shape": list(t.shape), "bytes": t.nbytes} for k, t in model.tensors.items()]
    n = sum(int(_prod(t.shape)) for t in model.tensors.values())
    sizes = {}
    for precision, fmt in WEIGHT_FORMAT.items():  # sized tensor by tensor, padding included; norms stay f32
        sizes[precision] = sum(storage_bytes(fmt if len(t.shape) > 1 else "f32", tuple(t.shape))
                               for t in model.tensors.values())
    tok = model.tokenizer
    return {"name": model.config.name, "kind": "model", "source": str(model.source), "architecture": "llama",
            "config": model.config.__dict__, "parameters": n, "weight_bytes": model.weight_bytes,
            "tokenizer": f"{tok.vocab_size} tokens" if tok is not None else None,
            "bytes_per_precision": sizes, "sizing": "each tensor sized in the format", "tensors": tensors}


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


@app.command("show")
def show(
    target: str = typer.Argument(..., metavar="NAME|PATH", help="A bundled model or spec name, or a model file/folder."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="A llama2.c tokenizer.bin to attach."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Architecture, parameters, bytes per precision, and every tensor's type, shape and bytes."""
    try:
        info = _describe(target, tokenizer)
    except WorkbenchError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(info, indent=2))
        return
    cfg = info["config"]
    print(f"{info['name']}  ({info['kind']}{', ' + info['source'] if info.get('source') else ''})")
    moe = f", {cfg['n_experts']} experts top-{cfg['n_experts_used']}" if cfg["n_experts"] else ""
    print(f"  llama: {cfg['n_layers']} layers, dim {cfg['dim']}, hidden {cfg['hidden_dim']}, heads {cfg['n_heads']}"
          f" (kv {cfg['n_kv_heads']}, head_dim {cfg['head_dim']}), vocab {cfg['vocab_size']}, context {cfg['seq_len']},"
          f" rope theta {cfg['rope_theta']:g}, {'tied' if cfg['tied_embeddings'] else 'untied'} embeddings{moe}")
    print(f"  parameters: {info['parameters']:,} ({_human_count(info['parameters'])})")
    if "weight_bytes" in info:
        print(f"  stored: {_human_bytes(info['weight_bytes'])}; tokenizer: {info['tokenizer'] or 'none (runs on ids)'}")
    print(f"  bytes per precision ({info['sizing']}):")
    for precision, n in info["bytes_per_precision"].items():
        print(f"    {precision:<8} {n:>16,}  {_human_bytes(n):>10}")
    if info["tensors"]:
        print("  tensors:")
        width = max(len(t["name"]) for t in info["tensors"])
        for t in info["tensors"]:
            shape = "x".join(str(d) for d in t["shape"])
            print(f"    {t['name']:<{width}}  {t['type']:<5} {shape:>16} {t['bytes']:>14,}")


@app.command("quantize")
def quantize_cmd(
    source: str = typer.Argument(..., metavar="IN", help="A bundled model name or a model file/folder."),
    to: str = typer.Option(..., "--to", help="int8|int4|ternary|binary|fp16|bf16|f32"),
    out: Path = typer.Option(..., "-o", "--output", help="The .gguf file to write (atomically)."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="A llama2.c tokenizer.bin to attach."),
) -> None:
    """Re-store every weight matrix of IN in the format of a precision and write a GGUF file."""
    from ..model.gguf_io import write_gguf
    from ..model.load import convert_precision, load_model
    from ..precision import WEIGHT_FORMAT

    if to not in WEIGHT_FORMAT:
        raise fail(f"--to: expected one of {'|'.join(WEIGHT_FORMAT)}, found '{to}'")
    if out.suffix.lower() != ".gguf":
        raise fail(f"{out}: -o: expected a .gguf path, found suffix '{out.suffix}'")
    stage = "while loading and converting"
    try:
        model = load_model(source, tokenizer=tokenizer)
        converted = convert_precision(model, to)
        stage = "while writing"
        notes = write_gguf(out, converted)
    except WorkbenchError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # write_gguf is atomic: the temp file is gone, `out` is as it was
        raise fail(f"interrupted {stage} {out}; nothing written (the file is unchanged)", code=130) from None
    for note in notes:
        print(f"fallback: {note}")
    print(f"wrote {out}: {len(converted.tensors)} tensors, {WEIGHT_FORMAT[to]} weights, "
          f"{_human_bytes(model.weight_bytes)} -> {_human_bytes(out.stat().st_size)} on disk")


def _register_extras() -> None:
    from .models_tokens import register as register_tokens

    register_tokens(app)


_register_extras()


@app.command("eval")
def eval_cmd(
    target: str = typer.Argument(..., help="Bundled model name or path."),
    precision: list[str] = typer.Option(["int8"], "--precision", help="Precision(s) to evaluate (repeatable)."),
    text: str = typer.Option(None, "--text", help="Held-out text file, one story per blank-line-separated paragraph (default: models/<name>-heldout.txt, or the base model's: tinytales-ternary uses tinytales')."),
    chip: str = typer.Option("teaching-4x4", "--chip", help="Chip to emulate on."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="tokenizer.bin for a llama2.c checkpoint."),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="Evaluate at most this many tokens."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Perplexity on held-out text and top-1 agreement with the f32 reference, per precision."""
    import json
    from pathlib import Path

    from ..chip import load_chip
    from ..data import data_dir
    from ..errors import WorkbenchError
    from ..evaluate import evaluate
    from ..model.load import load_model
    from ..precision import EMULATED_PRECISIONS

    if max_tokens < 1:
        raise fail(f"--max-tokens must be at least 1, got {max_tokens}")
    for p in precision:
        if p not in EMULATED_PRECISIONS:
            raise fail(f"--precision: expected one of {'|'.join(EMULATED_PRECISIONS)}, found '{p}'")
    model = load_model(target, tokenizer=tokenizer)
    if model.tokenizer is None:
        raise WorkbenchError("the model has no tokenizer: give --tokenizer to evaluate on text", source=target)
    if text is None:
        # models/<name>-heldout.txt, else that of the model it derives from (tinytales-ternary -> tinytales)
        parts = Path(target).stem.split("-")
        guesses = [data_dir("models") / f"{'-'.join(parts[:n])}-heldout.txt" for n in range(len(parts), 0, -1)]
        found = next((g for g in guesses if g.is_file()), None)
        if found is None:
            raise WorkbenchError(f"no held-out text ({guesses[0].name} not found): give --text FILE", source=target)
        text = str(found)
    try:
        body = Path(text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"cannot read held-out text ({exc})", source=text) from None
    # each paragraph is one story, framed <s> ... </s> as the bundled toys were trained
    ids = [i for para in body.split("\n\n") if para.strip()
           for i in model.tokenizer.encode(para.strip(), bos=True, eos=True)]
    chip_spec = load_chip(chip)
    results = [evaluate(chip_spec, model, ids, p, max_tokens=max_tokens)
               for p in precision]
    if as_json:
        print(json.dumps([r.to_dict() for r in results], sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{model.config.name}: {results[0].tokens} held-out tokens from {text}")
    for col in ("precision", "perplexity", "f32 reference", "top-1 agreement"):
        t.add_column(col, justify="right")
    for r in results:
        t.add_row(r.precision, f"{r.perplexity:.3f}", f"{r.reference_perplexity:.3f}", f"{100 * r.top1_agreement:.1f} %")
    Console().print(t)
