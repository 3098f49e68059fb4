"""A boot's private temporary directory, claimed while in use; a killed boot's is swept.

The claim is osbake.workspace's LockedFolder (a lock file beside the folder, held
for as long as the boot runs), the same as a build's work folder.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from osbake.workspace import LockedFolder, reap_folders

WORKDIR_PREFIX = "osbake-boot-"


@contextlib.contextmanager
def workspace(parent: Path | None = None) -> Iterator[Path]:
    """A private temporary directory for one boot, claimed while in use.

    A directory whose claim is free (or that has none) belongs to an osbake that
    was killed, and the next boot removes it.
    """
    base = Path(parent or tempfile.gettempdir())
    sweep_stale_workdirs(base)
    claim = LockedFolder(base / f"{WORKDIR_PREFIX}{secrets.token_hex(6)}")
    try:
        yield claim.path
    finally:
        shutil.rmtree(claim.path, ignore_errors=True)
        claim.release()


def sweep_stale_workdirs(parent: Path) -> None:
    """Remove the work directories (overlays) of boots whose osbake was killed."""
    with contextlib.suppress(OSError):
        reap_folders(parent, _remove, prefix=WORKDIR_PREFIX)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
