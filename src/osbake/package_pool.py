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


def for_arch(name: str, arch: str | None) -> bool:
    """Whether a package file serves a build for `arch` (its own, or arch-independent).

    Debian's file names end in _<arch>.deb; one pool holds every arch's packages."""
    if arch is None or not name.endswith((".deb", ".udeb")):
        return True
    return name.rsplit(".", 1)[0].rsplit("_", 1)[-1] in (arch, "all")


def _link_missing(source: Path, target: Path, arch: str | None = None) -> int:
    present = set(_packages(target))
    linked = 0
    for name, path in _packages(source).items():
        if name in present or not for_arch(name, arch):
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


def check_out(pool: Path, folder: Path, arch: str | None = None) -> int:
    """Fill a build's package folder from the pool (only `arch`'s and arch-independent
    packages, if given); return how many packages it got."""
    pool.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "partial").mkdir(exist_ok=True)
    return _link_missing(pool, folder, arch)


def check_in(pool: Path, folder: Path) -> int:
    """Give the pool what a build downloaded; return how many packages were new."""
    pool.mkdir(parents=True, exist_ok=True)
    return _link_missing(folder, pool)
