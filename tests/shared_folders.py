"""Folders under /var/tmp that a test run shares with other users, claimed for the run.

pytest's own temporary folders are root's (mode 0700), and a build user or an
unprivileged test user needs a folder it can reach. Each folder is claimed with a lock
file held for as long as the run uses it (osbake's own `LockedFolder`), so the next run
removes what a killed or interrupted run left behind (`reap_folders`, as for build
folders) and nothing of a run that still goes on.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from osbake.workspace import LockedFolder, reap_folders

ROOT = Path("/var/tmp")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def claim(prefix: str) -> LockedFolder:
    """A new folder `/var/tmp/<prefix><random>` every user can read, claimed by this run."""
    reap_folders(ROOT, _remove, prefix=prefix)
    folder = LockedFolder(ROOT / f"{prefix}{secrets.token_hex(6)}")
    folder.path.chmod(0o755)
    return folder


def release(folder: LockedFolder) -> None:
    """Remove the folder, then drop the claim."""
    _remove(folder.path)
    folder.release()
