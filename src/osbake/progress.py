"""Terminal rendering of build events: a live step list with elapsed times."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from osbake.events import Event


class TerminalProgress:
    """A step list that updates in place; `verbose` also prints every command and line."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.steps: list[dict[str, Any]] = []
        self.image = ""
        self.last_line = ""
        self.live: Live | None = None
        self.interactive = console.is_terminal

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        handler = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(event)
        if self.live is not None:
            self.live.update(self.render())

    def on_begin(self, event: Event) -> None:
        self.image = event["image"]
        self.steps = [
            {
                "name": s["name"],
                "describe": s.get("describe", ""),
                "state": "pending",
                "started": None,
                "seconds": None,
            }
            for s in event["steps"]
        ]
        if self.interactive:
            self.live = Live(
                self.render(), console=self.console, refresh_per_second=8, transient=False
            )
            self.live.start()
        else:
            self.console.print(f"building {self.image}")

    def _find(self, name: str) -> dict[str, Any] | None:
        for step in self.steps:
            if step["name"] == name:
                return step
        return None

    def on_step(self, event: Event) -> None:
        step = self._find(event["name"])
        if step is not None:
            step["state"] = "running"
            step["started"] = time.monotonic()
        self.last_line = ""
        if not self.interactive:
            self.console.print(f"==> {event['name']}")

    def on_result(self, event: Event) -> None:
        step = self._find(event["name"])
        if step is not None:
            step["state"] = event.get("status", "done")
            step["seconds"] = event["seconds"]
        if not self.interactive:
            self.console.print(
                f"    {event['name']}: {event.get('status', 'done')} in {event['seconds']:.1f}s"
            )

    def on_command(self, event: Event) -> None:
        if self.verbose:
            self.console.print(Text(f"$ {event['line']}", style="bold"), soft_wrap=True)

    def on_log(self, event: Event) -> None:
        self.last_line = event["line"]
        if self.verbose:
            self.console.print(Text(event["line"]), soft_wrap=True, highlight=False)

    def on_finish(self, event: Event) -> None:
        for step in self.steps:
            if step["state"] == "running":
                step["state"] = "failed" if not event["ok"] else "done"
                if step["started"] is not None:
                    step["seconds"] = time.monotonic() - step["started"]
        self.last_line = ""
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
            self.live = None

    def render(self) -> Group:
        table = Table.grid(padding=(0, 1))
        table.add_column(width=2)
        table.add_column(min_width=14)
        table.add_column(justify="right", width=7)
        table.add_column(overflow="ellipsis", no_wrap=True, max_width=60)
        for step in self.steps:
            state = step["state"]
            mark: Any
            if state == "running":
                mark = Spinner("dots", style="cyan")
                seconds = time.monotonic() - step["started"]
            else:
                mark = {
                    "pending": Text("·", style="dim"),
                    "done": Text("✓", style="green"),
                    "cached": Text("✓", style="blue"),
                    "failed": Text("✗", style="red"),
                }.get(state, Text("?"))
                seconds = step["seconds"]
            elapsed = f"{seconds:.1f}s" if seconds is not None else ""
            style = "dim" if state == "pending" else ""
            note = "cached" if state == "cached" else step["describe"]
            table.add_row(mark, Text(step["name"], style=style), elapsed, Text(note, style="dim"))
        parts: list[Any] = [Text(f"building {self.image}", style="bold"), table]
        if self.last_line and not self.verbose:
            parts.append(Text(self.last_line[:100], style="dim", no_wrap=True, overflow="ellipsis"))
        return Group(*parts)
