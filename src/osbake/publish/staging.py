"""Where a sync writes files on their way: one lock per file, private temporary names.

Everything written for one destination (a mirror's file, or a cloud target's download
in the cache folder) happens under that destination's lock, `.NAME.lock` beside it.
Two syncs of the same item (two processes, the console and the command line) take it
in turn: the second waits, then finds the item in the target and transfers nothing.
Each download and conversion writes a temporary file of its own (`.NAME.TOKEN.partial`,
`.NAME.TOKEN.raw`), a name no other process uses; whoever holds the lock knows that
every other temporary file of NAME was left by a run that died, and adopts it (a
download resumes from it) or removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from osbake.errors import PublishError
from osbake.events import Events


def lock_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.lock"


@contextlib.contextmanager
def hold(dest: Path, events: Events, *, what: str | None = None) -> Iterator[None]:
    """Hold the lock of `dest` (waiting for another holder); the lock file goes when done.

    The file is removed while it is held, so a waiter that then gets the lock of the
    removed file sees that it is not the current one and takes the lock again.
    """
    path = lock_path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(
            f"{dest.parent}: cannot create the folder ({exc.strerror})",
            hint="check the permissions, or set OSBAKE_CACHE_DIR to a folder this user owns",
        ) from None
    told = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PublishError(
                f"{path}: cannot create the lock file ({exc.strerror})",
                hint="check the permissions of the folder",
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:
                    events.log(f"waiting for another sync of {what or dest.name} to finish")
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue  # its holder removed it: take the new one
            held = os.fstat(fd)
            if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
                continue
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return
        finally:
            os.close(fd)


def private(dest: Path, kind: str) -> Path:
    """A temporary name for work on `dest` that no other process uses."""
    return dest.parent / f".{dest.name}.{secrets.token_hex(6)}.{kind}"


def leftovers(dest: Path, kind: str) -> list[Path]:
    """Temporary files of `dest` (and the pre-lock `.NAME.partial`); call with its lock held."""
    pattern = re.compile(rf"^\.{re.escape(dest.name)}(\.[0-9a-f]{{12}})?\.{re.escape(kind)}$")
    try:
        names = os.listdir(dest.parent)
    except FileNotFoundError:
        return []
    return sorted(dest.parent / name for name in names if pattern.match(name))


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sync_owner(cache_dir: Path) -> str:
    """Who uploads: this host and cache folder (the reach of the locks above).

    Clouds keep it on what a sync makes, so that the next sync from here knows the
    leftovers of an interrupted one as its own (no other sync can be working on
    them while it holds the item's lock).
    """
    host = ""
    for source in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            host = Path(source).read_text().strip()
            if host:
                break
    host = host or socket.gethostname()
    return hashlib.sha256(f"{host}\0{cache_dir.resolve()}".encode()).hexdigest()[:16]
