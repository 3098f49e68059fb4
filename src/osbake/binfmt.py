"""Can this host run another architecture's programs? The foreign-build preflight.

A build for another architecture runs the image's own programs (dpkg's maintainer
scripts, apt, mkinitramfs's tools) through the kernel's binfmt_misc and QEMU's
user-mode emulator. osbake never changes the host's binfmt_misc; it reads it and,
when a handler is missing, says exactly how to enable it.

The handler needs the F (fix binary) flag: the kernel then opens the emulator when
the handler is registered, so it runs inside bwrap, chroots and user namespaces,
where the host's /usr/libexec/qemu-binfmt is not visible.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from osbake.arch import Arch, from_any
from osbake.errors import HostError, Location

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# Debian's qemu-user-static registers these with the F flag (update-binfmts, or
# systemd-binfmt from /usr/lib/binfmt.d); binfmt-support is what `update-binfmts` is.
PACKAGES = "qemu-user-static binfmt-support"


def host_arch() -> Arch | None:
    return from_any(platform.machine())


def binfmt_dir() -> Path:
    return Path(os.environ.get("OSBAKE_BINFMT_DIR", str(BINFMT_DIR)))


@dataclass(frozen=True)
class Handler:
    name: str
    enabled: bool
    flags: str
    interpreter: str


def read_handler(folder: Path, name: str) -> Handler | None:
    """A binfmt_misc handler as the kernel lists it (None: not registered)."""
    path = folder / name
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    lines = text.splitlines()
    fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
    return Handler(
        name=name,
        enabled=bool(lines) and lines[0].strip() == "enabled",
        flags=fields.get("flags:", "").strip(),
        interpreter=fields.get("interpreter", "").strip(),
    )


def needs_emulation(target: Arch, host: Arch | None) -> bool:
    """Whether the host's CPU cannot run `target`'s programs itself."""
    if host is None or target == host:
        return False
    return target.info.debian not in host.info.runs


def check_runs(
    target: Arch,
    *,
    location: Location | None = None,
    host: Arch | None = None,
    folder: Path | None = None,
) -> None:
    """Raise HostError, with the commands that fix it, unless `target`'s programs run here."""
    host = host_arch() if host is None else host
    if not needs_emulation(target, host):
        return
    folder = binfmt_dir() if folder is None else folder
    name = f"qemu-{target.info.qemu_user}"
    what = f"this {host} host cannot run {target} programs"
    if not (folder / "status").exists():
        raise HostError(
            f"{what}: binfmt_misc is not mounted ({folder})",
            location=location,
            hint=f"as root: mount -t binfmt_misc binfmt_misc {folder}; "
            f"apt-get install {PACKAGES}; update-binfmts --enable {name}",
        )
    handler = read_handler(folder, name)
    if handler is None:
        raise HostError(
            f"{what}: no binfmt_misc handler {name} is registered",
            location=location,
            hint=f"as root: apt-get install {PACKAGES}; update-binfmts --enable {name} "
            f"(or: systemctl restart systemd-binfmt)",
        )
    if not handler.enabled:
        raise HostError(
            f"{what}: the binfmt_misc handler {name} is disabled",
            location=location,
            hint=f"as root: update-binfmts --enable {name} (or: echo 1 > {folder / name})",
        )
    if "F" not in handler.flags:
        raise HostError(
            f"{what} inside the build's sandbox: the binfmt_misc handler {name} "
            f"has no F (fix binary) flag (flags: {handler.flags or 'none'})",
            location=location,
            hint=f"as root: echo -1 > {folder / name}; then register Debian's "
            f"{name} (F flag): apt-get install {PACKAGES}; update-binfmts --enable {name}",
        )
