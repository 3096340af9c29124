"""Sessions: scripted runs of the workbench (session.toml) — parse, replay, record, export."""

from .record import save_session
from .runner import Replay, ReplayResult, replay
from .spec import SessionSpec, load_session, parse_session

__all__ = ["Replay", "ReplayResult", "SessionSpec", "load_session", "parse_session", "replay", "save_session"]
