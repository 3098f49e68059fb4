"""Locked work folders, and the output folder's partial files, with reaping.

A build works in a private folder under the work root and writes its outputs
under partial names in the output folder. Both are claimed with a lock file
(flock) held for as long as the build runs, so that the next build can remove
what killed builds left behind (whose locks are free) and nothing of a build
that still runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from osbake import sandbox
from osbake.errors import OsbakeError
from osbake.settings import Settings


class LockedFolder:
    """A folder claimed by a lock file beside it (`NAME.lock`), held while in use.

    The lock is taken before the folder exists and dropped only after the folder
    is gone (or moved away), so a folder whose lock is free, or that has no lock
    file, belongs to nobody running: `reap_folders` removes it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.lock: IO[str] | None = _lock_current(self.lock_path)
        path.mkdir()

    def release(self) -> None:
        """Drop the claim (the folder must be gone or moved away by now)."""
        if self.lock is not None:
            self.lock_path.unlink(missing_ok=True)
            self.lock.close()
            self.lock = None


def _lock_current(path: Path) -> IO[str]:
    """Open and lock `path`; again if a reaper removed the file before the lock was taken."""
    while True:
        handle = path.open("a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


def reap_folders(root: Path, remove: Callable[[Path], None], prefix: str = "") -> int:
    """Remove the folders under `root` of claims whose holder is gone; return how many.

    With `prefix`, only folders whose names start with it are looked at (a shared
    folder such as /tmp holds other programs' folders too).
    """
    removed = 0
    for lock_path in root.glob(f"{glob.escape(prefix)}*.lock"):
        try:
            handle = lock_path.open("r")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its holder runs
            folder = lock_path.with_suffix("")
            if folder.exists():
                remove(folder)
                removed += 1
            lock_path.unlink(missing_ok=True)
    for entry in root.glob(f"{glob.escape(prefix)}*"):
        if entry.is_dir() and not entry.with_name(entry.name + ".lock").exists():
            remove(entry)
            removed += 1
    return removed


@contextlib.contextmanager
def workspace(settings: Settings, image: str) -> Iterator[Path]:
    """A private work directory, locked while in use and removed afterwards."""
    root = settings.work_dir
    root.mkdir(parents=True, exist_ok=True)
    reap_folders(root, _remove_tree)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    # The PID is 1 inside the build's PID namespace: a random token keeps names apart.
    claim = LockedFolder(root / f"{image}-{stamp}-{secrets.token_hex(4)}")
    try:
        yield claim.path
    finally:
        _remove_tree(claim.path)
        claim.release()


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(OsbakeError):
        sandbox.remove_tree(path)


# -- the output folder ---------------------------------------------------------------------
#
# Outputs are written under partial names and renamed when the whole build
# succeeded. A build killed on the way (SIGKILL, power loss) cannot remove its
# partials, so each build claims the output folder with a lock file of its own,
# `.osbake-<token>.lock`, held (flock) for as long as it runs, and names every
# partial `.<final name>.<token>.partial`. The next build in the folder removes
# the partials of every token whose lock is free or gone: only files of that
# pattern, which osbake owns, and never those of a build that is still running.

OUTPUT_LOCK_PREFIX = ".osbake-"
OUTPUT_LOCK_SUFFIX = ".lock"
_TOKEN = r"[0-9a-f]{16}"
_PARTIAL = re.compile(rf"^\.(?P<final>.+)\.(?P<token>{_TOKEN})\.partial$")
_OUTPUT_LOCK = re.compile(rf"^\.osbake-(?P<token>{_TOKEN})\.lock$")


def partial_name(final: str, token: str) -> str:
    return f".{final}.{token}.partial"


def _output_lock(outdir: Path, token: str) -> Path:
    return outdir / f"{OUTPUT_LOCK_PREFIX}{token}{OUTPUT_LOCK_SUFFIX}"


@contextlib.contextmanager
def claim_outputs(outdir: Path) -> Iterator[str]:
    """Hold a token of this build in `outdir` for its partial outputs (see above).

    Removes what interrupted builds left first. On the way out (however the build
    ends) this build's own partials are removed and its lock file with them.
    """
    reap_partials(outdir)
    token = secrets.token_hex(8)
    path = _output_lock(outdir, token)
    handle = _lock_current(path)
    try:
        yield token
    finally:
        _remove_partials(outdir, token)
        path.unlink(missing_ok=True)
        handle.close()


def reap_partials(outdir: Path) -> list[Path]:
    """Remove the partial outputs of builds that are gone; return what was removed."""
    removed: list[Path] = []
    try:
        names = os.listdir(outdir)
    except OSError:
        return removed
    live: set[str] = set()
    for name in names:
        match = _OUTPUT_LOCK.match(name)
        if match is None:
            continue
        path = outdir / name
        try:
            handle = path.open("r")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.add(match["token"])  # a running build holds it
                continue
            removed += _remove_partials(outdir, match["token"])
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    # A build locks its token before its first partial and removes its partials
    # before its lock file, so a partial whose token has no lock belongs to no
    # running build (a reaper that was killed half-way, or an older osbake).
    for name in names:
        match = _PARTIAL.match(name)
        token = match["token"] if match is not None else None
        if token is not None and token not in live and not _output_lock(outdir, token).exists():
            removed += _remove(outdir / name)
    return removed


def _remove_partials(outdir: Path, token: str) -> list[Path]:
    removed: list[Path] = []
    try:
        names = os.listdir(outdir)
    except OSError:
        return removed
    for name in names:
        match = _PARTIAL.match(name)
        if match is not None and match["token"] == token:
            removed += _remove(outdir / name)
    return removed


def _remove(path: Path) -> list[Path]:
    # Only plain files: osbake never writes anything else under a partial name.
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
            return [path]
    except FileNotFoundError:
        pass
    return []
