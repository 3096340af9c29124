"""``asicbench models encode`` / ``models decode``: text to token ids and back with a model's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ModelError, WorkbenchError

_TOKENIZER_HELP = "A llama2.c tokenizer.bin, a .gguf model holding a tokenizer, or a bundled model name."


def load_tokenizer(name_or_path: str):
    """A Tokenizer from a llama2.c tokenizer.bin, or from a model (GGUF file or bundled name) that holds one."""
    from ..model.tokenizer import Tokenizer

    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() not in (".gguf", ".safetensors"):
        return Tokenizer.from_llama2c(path)
    from ..model.load import load_model

    model = load_model(name_or_path)
    if model.tokenizer is None:
        raise ModelError("expected a model with a tokenizer, found none (pass a tokenizer.bin instead)",
                         source=name_or_path, key="--tokenizer")
    return model.tokenizer


def register(models_app: typer.Typer) -> None:
    """Add ``encode`` and ``decode`` to the ``models`` sub-app."""
    from . import fail

    @models_app.command("encode")
    def encode(
        text: list[str] = typer.Argument(..., help="Text to encode; several arguments are joined by one space."),
        tokenizer: str = typer.Option(..., "--tokenizer", "-t", help=_TOKENIZER_HELP),
        bos: bool = typer.Option(True, "--bos/--no-bos", help="Start with the BOS token, as llama2.c does."),
        as_json: bool = typer.Option(False, "--json", help='Print {"ids": [...]}.'),
    ) -> None:
        """Print the token ids of TEXT, space-separated (llama2.c's encode: BOS, dummy prefix, BPE merges)."""
        try:
            ids = load_tokenizer(tokenizer).encode(" ".join(text), bos=bos)
        except WorkbenchError as exc:
            raise fail(str(exc)) from None
        print(json.dumps({"ids": ids}) if as_json else " ".join(map(str, ids)))

    @models_app.command("decode")
    def decode(
        ids: list[str] = typer.Argument(..., help="Token ids (use -- before negative numbers)."),
        tokenizer: str = typer.Option(..., "--tokenizer", "-t", help=_TOKENIZER_HELP),
        as_json: bool = typer.Option(False, "--json", help='Print {"text": "..."}.'),
    ) -> None:
        """Print the text of token IDS (BOS/EOS print nothing; byte tokens join into UTF-8)."""
        try:
            tok = load_tokenizer(tokenizer)
            values = []
            for raw in ids:
                try:
                    values.append(int(raw))
                except ValueError:
                    raise ModelError(f"expected integer token ids, found {raw!r}", key="IDS") from None
            text = tok.decode(values)
        except WorkbenchError as exc:
            raise fail(str(exc)) from None
        print(json.dumps({"text": text}, ensure_ascii=False) if as_json else text)
