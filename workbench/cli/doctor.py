"""``asicbench doctor``: say what is wrong with this installation, if anything."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor() -> None:
        """Check numba, its cache, bundled data and the terminal; print versions. Exit 1 when unhealthy."""
        from ..doctor import run_checks

        checks = run_checks()
        for c in checks:
            print(f"{'ok ' if c.ok else 'BAD'}  {c.name}: {c.detail}")
        bad = [c for c in checks if not c.ok]
        if bad:
            print(f"{len(bad)} problem(s): " + "; ".join(c.name for c in bad))
            raise typer.Exit(1)
        print("healthy")
