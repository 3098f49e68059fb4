"""The job queue: Huey, on SQLite for the embedded console and on Redis for a farm.

The console only enqueues build ids; workers (`osbake worker`) consume them and
report back to the console over HTTP, so a worker needs nothing but the queue
and the console's URL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey

from osbake.errors import UsageError

TASK_NAME = "osbake.build"


class BuildQueue(Protocol):
    def enqueue(self, build_id: int) -> None: ...

    def pending(self) -> list[int]:
        """The build ids on the queue now (not yet taken by a worker)."""
        ...


def make_huey(url: str) -> Huey:
    """A Huey instance for a queue URL: sqlite:///path, redis://host:port/db or memory://."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            path = Path("/") / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name="osbake", filename=str(path))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(name="osbake", url=url)
    if url == "memory://":
        return MemoryHuey(name="osbake")
    raise UsageError(
        f"unsupported queue URL '{url}'",
        hint="use redis://HOST:PORT/DB for a build farm, or leave --queue out for SQLite",
    )


class HueyQueue:
    """The console's side of the queue: puts build ids on it."""

    def __init__(self, url: str, run: Callable[[int], Any] | None = None) -> None:
        self.url = url
        self.huey = make_huey(url)
        handler = run or _not_here

        # Defined here for both sides so that the task's name (module + name) is the
        # same in the console that enqueues and in the worker that runs it.
        def build(build_id: int) -> Any:
            return handler(build_id)

        self.task = self.huey.task(name=TASK_NAME)(build)

    def enqueue(self, build_id: int) -> None:
        self.task(build_id)

    def pending(self) -> list[int]:
        ids = []
        for task in self.huey.pending():
            if getattr(task, "name", None) == TASK_NAME and task.args:
                try:
                    ids.append(int(task.args[0]))
                except (TypeError, ValueError):
                    continue
        return ids

    def consumer(self, workers: int) -> Any:
        # Poll at least every second: a build should start as soon as it is queued.
        return self.huey.create_consumer(
            workers=workers, worker_type="thread", periodic=False, max_delay=1.0
        )


def _not_here(build_id: int) -> None:
    raise RuntimeError("builds run in `osbake worker`, not in the console")


class ListQueue:
    """A queue that only remembers what was put on it (for tests)."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def enqueue(self, build_id: int) -> None:
        self.ids.append(build_id)

    def take(self) -> int:
        """What a worker does: take the next id off the queue."""
        return self.ids.pop(0)

    def pending(self) -> list[int]:
        return list(self.ids)
