"""Find bundled data (chips/, models/, sessions/) from a checkout or an installed wheel.

Anywhere a bundled name is accepted, a path is accepted too: ``resolve("chips", x)``
returns ``x`` itself when it names an existing file.
"""

from __future__ import annotations

from pathlib import Path

from .errors import WorkbenchError

KINDS = ("chips", "models", "sessions")
_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """The folder holding bundled ``kind`` files: inside the wheel, else the checkout root."""
    if kind not in KINDS:
        raise ValueError(kind)
    installed = _PACKAGE_DIR / "_bundled" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / kind


def bundled_names(kind: str, suffixes: tuple[str, ...]) -> list[str]:
    """Names (file stems) of bundled files of ``kind`` with one of ``suffixes``, sorted."""
    folder = data_dir(kind)
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.suffix in suffixes and not p.name.startswith(".")})


def resolve(kind: str, name_or_path: str | Path, suffixes: tuple[str, ...], *, base: Path | None = None) -> Path:
    """Turn a bundled name or a path into an existing file path.

    ``base`` is the folder relative paths are taken from (a session file's folder).
    """
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if base is not None and not candidate.is_absolute():
        candidate = base / candidate
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        raise WorkbenchError("is a directory, expected a file", source=text)
    folder = data_dir(kind)
    for suffix in suffixes:
        bundled = folder / f"{text}{suffix}"
        if bundled.is_file():
            return bundled
    names = bundled_names(kind, suffixes)
    hint = _did_you_mean(text, names)
    raise WorkbenchError(
        f"no such file, and no bundled {kind[:-1]} of that name{hint} (bundled: {', '.join(names) or 'none'})",
        source=text,
    )


def _did_you_mean(word: str, options: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def did_you_mean(word: str, options) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or an empty string."""
    return _did_you_mean(word, list(options))
