"""The host's shared pool of downloaded packages.

Each build works on its own folder of packages, filled with hard links to the pool
before it starts, and gives what it downloaded back to the pool (again as hard
links) after each step. So every package is downloaded once per host, and builds
running at the same time never share apt's lock on one folder.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_SUFFIXES = (".deb", ".udeb", ".rpm")


def _packages(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        entry.name: entry
        for entry in folder.iterdir()
        if entry.name.endswith(PACKAGE_SUFFIXES) and entry.is_file()
    }


def _link_missing(source: Path, target: Path) -> int:
    present = set(_packages(target))
    linked = 0
    for name, path in _packages(source).items():
        if name in present:
            continue
        try:
            os.link(path, target / name)
        except FileExistsError:
            continue
        except OSError:
            # Another file system: copy to a temporary name, then rename (atomic).
            temp = target / f".{name}.partial"
            temp.write_bytes(path.read_bytes())
            temp.rename(target / name)
        linked += 1
    return linked


def check_out(pool: Path, folder: Path) -> int:
    """Fill a build's package folder from the pool; return how many packages it got."""
    pool.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "partial").mkdir(exist_ok=True)
    return _link_missing(pool, folder)


def check_in(pool: Path, folder: Path) -> int:
    """Give the pool what a build downloaded; return how many packages were new."""
    pool.mkdir(parents=True, exist_ok=True)
    return _link_missing(folder, pool)
