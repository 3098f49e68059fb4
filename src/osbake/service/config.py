"""The console's settings, built by a factory from the command line or the tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from osbake import formats
from osbake.errors import UsageError

GIB = 1 << 30


@dataclass(frozen=True)
class ServiceSettings:
    """Where the console keeps its data and how it behaves."""

    data_dir: Path
    database_url: str
    queue_url: str
    secret_key: str
    anonymous_read: bool = False
    keep_builds: int = 5  # per configuration and channel (milestone), besides blessed ones
    disk_budget: int | None = None  # bytes of artifacts; None: no budget
    heartbeat_timeout: float = 60.0  # a running build whose worker is silent longer fails
    tick_seconds: float = 5.0  # how often the scheduler, reaper and collector look
    requeue_after: float = 30.0  # a queued build missing from the queue this long goes back
    stream_seconds: float = 600.0  # a live-log stream ends after this (the page reconnects)
    max_upload: int = 256 * GIB  # the largest artifact a worker may upload
    publish_hooks: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def create(
        cls,
        data_dir: Path,
        *,
        database_url: str | None = None,
        queue_url: str | None = None,
        anonymous_read: bool = False,
        keep_builds: int = 5,
        disk_budget: int | None = None,
        heartbeat_timeout: float = 60.0,
        tick_seconds: float = 5.0,
        requeue_after: float = 30.0,
        stream_seconds: float = 600.0,
    ) -> ServiceSettings:
        """Settings for a data directory; SQLite and a SQLite queue unless told otherwise."""
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        _keep_private(data_dir)
        if keep_builds < 1:
            raise UsageError("--keep must be at least 1", hint="e.g. --keep 5")
        return cls(
            data_dir=data_dir,
            database_url=normalise_database_url(
                database_url or f"sqlite:///{data_dir / 'osbake.db'}"
            ),
            queue_url=queue_url or f"sqlite:///{data_dir / 'queue.db'}",
            secret_key=_secret_key(data_dir),
            anonymous_read=anonymous_read,
            keep_builds=keep_builds,
            disk_budget=disk_budget,
            heartbeat_timeout=heartbeat_timeout,
            tick_seconds=tick_seconds,
            requeue_after=requeue_after,
            stream_seconds=stream_seconds,
        )

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def scratch_dir(self) -> Path:
        return self.data_dir / "scratch"


def _keep_private(data_dir: Path) -> None:
    """The data folder (database, secret key, artifacts, logs) is the console's alone.

    Builds run as other users (see worker.py): they must not even list it.
    """
    try:
        if data_dir.stat().st_mode & 0o077:
            data_dir.chmod(0o700)
    except PermissionError:
        raise UsageError(
            f"the data folder {data_dir} belongs to another user and cannot be made private",
            hint="give a --data folder that this user owns",
        ) from None


def normalise_database_url(url: str) -> str:
    """postgresql:// URLs use psycopg 3 (the driver osbake installs)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not (url.startswith("sqlite:") or url.startswith("postgresql+")):
        raise UsageError(
            f"unsupported database URL '{url}'",
            hint="use postgresql://USER:PASSWORD@HOST/DB, or leave --db out for SQLite",
        )
    return url


def _secret_key(data_dir: Path) -> str:
    """The key that signs session cookies: made once per data directory, kept private."""
    path = data_dir / "secret_key"
    if not path.exists():
        partial = path.with_name(".secret_key.partial")
        partial.write_text(secrets.token_urlsafe(48))
        partial.chmod(0o600)
        partial.replace(path)
    return path.read_text().strip()


def parse_size(text: str) -> int:
    """'20G', '500M', '1.5T' or a number of bytes (a bare G is a GiB, as for qemu-img)."""
    try:
        return formats.parse_size(text, flag=True)
    except ValueError:
        raise UsageError(
            f"'{text}' is not a size", hint="write a number of bytes or e.g. 500M, 20G"
        ) from None
