"""Blessing and retention: what is kept, what is freed, and how much disk it takes.

Kept: every blessed build, every queued or running build, every build being
downloaded, and the last N successful builds per configuration and channel
(milestone). A disk budget frees more, oldest first, but never the newest build
of a channel, a blessed one or one in use. Database rows stay (marked purged) so
history and "which image had package X" keep working.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from osbake.service.builds import artifact_dir
from osbake.service.config import ServiceSettings
from osbake.service.models import BootState, Build, BuildState, now
from osbake.service.problems import Conflict

BlessHook = Callable[[Build, Path], None]


class InUse:
    """Builds whose files are being read right now (downloads): never collected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: Counter[int] = Counter()

    @contextmanager
    def hold(self, build_id: int) -> Iterator[None]:
        with self._lock:
            self._count[build_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._count[build_id] -= 1
                if self._count[build_id] <= 0:
                    del self._count[build_id]

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._count)


def bless(
    session: Session,
    settings: ServiceSettings,
    build: Build,
    who: str,
    hooks: list[BlessHook] | None = None,
) -> Build:
    """Mark a build as released; only a succeeded build whose boot test passed."""
    if build.state != BuildState.SUCCEEDED:
        raise Conflict(f"build {build.id} is {build.state}; only a succeeded build can be blessed")
    if build.boot_state != BootState.PASSED:
        detail = f" ({build.boot_detail})" if build.boot_detail else ""
        raise Conflict(
            f"build {build.id} has not passed a boot test: it is {build.boot_state}{detail}",
            hint="only builds of disk images that booted under `osbake boot` can be blessed",
        )
    if build.purged:
        raise Conflict(f"the artifacts of build {build.id} were already collected")
    build.blessed = True
    build.blessed_by = who
    build.blessed_at = now()
    session.commit()
    # Publishing (simplestreams) plugs in here: each hook gets the blessed build and
    # the folder of its artifacts.
    for hook in hooks or []:
        hook(build, artifact_dir(settings, build.id))
    return build


def unbless(
    session: Session,
    settings: ServiceSettings,
    build: Build,
    who: str,
    hooks: list[BlessHook] | None = None,
) -> Build:
    """Take a build's blessing back: it leaves the published streams at the next publish
    and retention treats it as any other build again."""
    if not build.blessed:
        raise Conflict(f"build {build.id} is not blessed")
    build.blessed = False
    build.blessed_by = None
    build.blessed_at = None
    session.commit()
    for hook in hooks or []:  # the same hooks: publishing lists what is blessed now
        hook(build, artifact_dir(settings, build.id))
    return build


def directory_size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass
class Usage:
    total: int
    budget: int | None
    free_on_disk: int
    by_configuration: dict[str, int]
    builds_with_files: int


def disk_usage(session: Session, settings: ServiceSettings) -> Usage:
    builds = session.scalars(select(Build).where(Build.purged.is_(False))).all()
    by_configuration: dict[str, int] = defaultdict(int)
    total = 0
    for build in builds:
        by_configuration[build.configuration.name] += build.disk_bytes
        total += build.disk_bytes
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.artifacts_dir).free
    return Usage(total, settings.disk_budget, free, dict(by_configuration), len(builds))


@dataclass
class Collection:
    purged: list[int] = field(default_factory=list)
    freed: int = 0
    over_budget: int = 0  # bytes still over the budget (everything left is protected)


def collect(session: Session, settings: ServiceSettings, in_use: InUse) -> Collection:
    """Free the artifacts of every build retention does not keep."""
    busy = in_use.ids()
    builds = session.scalars(
        select(Build).where(Build.purged.is_(False)).order_by(Build.id.desc())
    ).all()
    result = Collection()
    seen: Counter[tuple[int, str]] = Counter()
    kept: list[Build] = []
    for build in builds:  # newest first
        if not BuildState(build.state).finished or build.id in busy:
            continue
        channel = (build.configuration_id, build.milestone)
        if build.state == BuildState.SUCCEEDED:
            seen[channel] += 1
            if build.blessed or seen[channel] <= settings.keep_builds:
                kept.append(build)
                continue
        elif build.blessed:
            continue
        elif not artifact_dir(settings, build.id).exists():
            continue  # a failed or cancelled build that left no files: nothing to free
        _purge(settings, build, result)
    if settings.disk_budget is not None:
        total = sum(b.disk_bytes for b in builds if not b.purged)
        newest: set[tuple[int, str]] = set()
        candidates = []
        for build in kept:  # newest first: the first of each channel stays
            channel = (build.configuration_id, build.milestone)
            if channel not in newest:
                newest.add(channel)
            elif not build.blessed:
                candidates.append(build)
        for build in reversed(candidates):  # oldest first
            if total <= settings.disk_budget:
                break
            total -= build.disk_bytes
            _purge(settings, build, result)
        result.over_budget = max(0, total - settings.disk_budget)
    session.commit()
    return result


def _purge(settings: ServiceSettings, build: Build, result: Collection) -> None:
    folder = artifact_dir(settings, build.id)
    freed = directory_size(folder)
    shutil.rmtree(folder, ignore_errors=True)
    build.purged = True
    build.disk_bytes = 0
    result.purged.append(build.id)
    result.freed += freed
