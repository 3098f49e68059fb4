"""Where osbake keeps its caches and work trees on this host."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    cache_dir: Path

    @classmethod
    def from_environment(cls) -> Settings:
        """OSBAKE_CACHE_DIR, else /var/cache/osbake for root, else ~/.cache/osbake."""
        value = os.environ.get("OSBAKE_CACHE_DIR")
        if value:
            return cls(Path(value).resolve())
        real_root = os.geteuid() == 0 and os.environ.get("OSBAKE_ROOTLESS") != "1"
        if real_root:
            return cls(Path("/var/cache/osbake"))
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return cls(Path(xdg) / "osbake")

    def check_writable(self) -> None:
        """Fail with a clear message when this user cannot write the cache folders."""
        from osbake.errors import HostError

        for folder in (self.work_dir, self.store_dir, self.cache_dir / "packages"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".probe-{os.getpid()}"
                probe.touch()
                probe.unlink()
            except OSError as error:
                raise HostError(
                    f"cannot write to the cache folder {folder}: {error.strerror}",
                    hint="set OSBAKE_CACHE_DIR to a folder this user owns (without it, "
                    "root uses /var/cache/osbake and other users ~/.cache/osbake)",
                ) from None

    def package_cache(self, distro: str) -> Path:
        """Downloaded packages, shared by every build of this host and user."""
        return self.cache_dir / "packages" / distro

    @property
    def store_dir(self) -> Path:
        """The step cache (osbake.cache)."""
        return self.cache_dir / "store"

    @property
    def work_dir(self) -> Path:
        return self.cache_dir / "work"
