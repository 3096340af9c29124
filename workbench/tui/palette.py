"""Command palette provider: every command of workbench.commands, the same objects the keys come from."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from ..commands import COMMANDS


class CommandsProvider(Provider):
    def _hits(self):
        for c in COMMANDS:
            keys = " / ".join(k for k in (c.key, c.alias) if k)
            yield c, f"{c.title}" + (f"  [{keys}]" if keys else ""), partial(self.app.action_cmd, c.name)

    async def discover(self) -> Hits:
        for c, text, run in self._hits():
            yield DiscoveryHit(text, run, help=escape(c.help))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for c, text, run in self._hits():
            score = matcher.match(f"{text} {c.name}")
            if score > 0:
                yield Hit(score, matcher.highlight(text), run, help=escape(c.help))
