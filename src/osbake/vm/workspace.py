"""A boot's private temporary directory, locked while in use; a killed boot's is swept."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

WORKDIR_PREFIX = "osbake-boot-"
LOCK_FILE = "osbake.lock"


@contextlib.contextmanager
def workspace(parent: Path | None = None) -> Iterator[Path]:
    """A private temporary directory for one boot, locked while in use.

    The lock (flock, so it also holds across PID namespaces) is taken before the
    lock file gets its name; a directory whose lock is free belongs to an osbake
    that was killed, and the next boot removes it.
    """
    base = Path(parent or tempfile.gettempdir())
    sweep_stale_workdirs(base)
    folder = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=base))
    pending = folder / (LOCK_FILE + ".new")
    lock = pending.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pending.rename(folder / LOCK_FILE)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.close()


def sweep_stale_workdirs(parent: Path) -> None:
    """Remove the work directories (overlays) of boots whose osbake was killed."""
    try:
        candidates = sorted(parent.glob(WORKDIR_PREFIX + "*"))
    except OSError:
        return
    for folder in candidates:
        try:
            handle = (folder / LOCK_FILE).open("r")
        except OSError:
            continue  # being set up, or not a boot's directory
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a running boot holds it
            shutil.rmtree(folder, ignore_errors=True)
