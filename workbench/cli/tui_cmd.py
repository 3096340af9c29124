"""``asicbench tui``: open the workbench on any chip and model (textual is imported only inside the command)."""

from __future__ import annotations

import typer

from ..bench import BenchOptions

_D = BenchOptions()


def register(app: typer.Typer) -> None:
    @app.command("tui")
    def tui(
        chip: str = typer.Option(_D.chip, "--chip", "-c", help="Bundled chip name or a profile path."),
        model: str = typer.Option(_D.model, "--model", "-m", help="Bundled model name or a .gguf/.bin path."),
        tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer file for a model without one."),
        precision: str = typer.Option(_D.precision, "--precision", "-p", help="Weights and MACs in this precision."),
        mapping: str = typer.Option(_D.mapping, "--mapping", help="tensor | pipeline | hybrid | auto."),
        batch: int = typer.Option(_D.batch, "--batch", "-b", help="Sequences run at once."),
        prompt: str = typer.Option(_D.prompt, "--prompt", help="Text to continue (token ids for a model without a tokenizer)."),
        temperature: float = typer.Option(_D.temperature, "--temperature", help="0 = greedy."),
        seed: int = typer.Option(_D.seed, "--seed", help="Sampling seed."),
        context: int = typer.Option(_D.context, "--context", help="Tokens of context to plan the KV cache for (0 = the model's)."),
    ) -> None:
        """Open the workbench TUI: step the emulated chip token by token and watch every pane."""
        from . import fail

        if batch < 1:
            raise fail(f"--batch must be at least 1, got {batch}")
        if temperature < 0:
            raise fail(f"--temperature must be 0 or more, got {temperature}")
        if context < 0:
            raise fail(f"--context must be 0 (the model's) or more, got {context}")
        options = BenchOptions(chip=chip, model=model, tokenizer=tokenizer, precision=precision, mapping=mapping,
                               batch=batch, prompt=prompt, temperature=temperature, seed=seed, context=context)
        from ..tui.app import run_app

        run_app(options)
