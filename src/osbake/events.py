"""One progress interface for every consumer.

The library reports what it does through an `Events` object: a build begins
(with its plan), steps start and end, commands run and print lines, and the build
finishes. Sinks render the same events as a terminal progress display, JSON lines
for machines (the build console reads them), or a build log file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import IO, Any

Event = dict[str, Any]
Sink = Callable[[Event], None]


class Events:
    """Fan events out to sinks. Cheap to call; never raises into the build."""

    def __init__(self, *sinks: Sink) -> None:
        self._sinks: list[Sink] = list(sinks)
        self._lock = threading.Lock()

    def add(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def emit(self, kind: str, **fields: Any) -> None:
        event: Event = {"event": kind, "time": round(time.time(), 3), **fields}
        with self._lock:
            for sink in self._sinks:
                sink(event)

    def begin(self, image: str, steps: list[dict[str, str]]) -> None:
        self.emit("begin", image=image, steps=steps)

    def step(self, name: str) -> None:
        self.emit("step", name=name)

    def command(self, line: str) -> None:
        self.emit("command", line=line)

    def log(self, line: str) -> None:
        self.emit("log", line=line)

    def progress(self, name: str, done: int, total: int | None) -> None:
        self.emit("progress", name=name, done=done, total=total)

    def result(self, name: str, seconds: float, *, status: str = "done") -> None:
        self.emit("result", name=name, seconds=round(seconds, 3), status=status)

    def finish(
        self,
        ok: bool,
        *,
        error: str | None = None,
        step: str | None = None,
        artifacts: list[str] | None = None,
    ) -> None:
        self.emit("finish", ok=ok, error=error, step=step, artifacts=artifacts or [])


class JsonLinesSink:
    """Write each event as one JSON line (the machine interface, `--json`)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: Event) -> None:
        self._stream.write(json.dumps(event, sort_keys=True) + "\n")
        self._stream.flush()


class LogFileSink:
    """Write a plain-text build log: commands, their output, and step results."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
        if kind == "step":
            text = f"==> {event['name']}"
        elif kind == "command":
            text = f"$ {event['line']}"
        elif kind == "log":
            text = event["line"]
        elif kind == "result":
            text = f"<== {event['name']}: {event['status']} in {event['seconds']:.1f}s"
        elif kind == "finish":
            text = "build succeeded" if event["ok"] else f"build failed: {event['error']}"
        else:
            return
        self._stream.write(f"{stamp} {text}\n")
        self._stream.flush()


def null_events() -> Events:
    return Events()
