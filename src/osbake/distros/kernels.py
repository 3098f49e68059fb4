"""Kernels: which package a recipe's `kernel:` means, and what the installed one weighs.

The footprint (the kernel image, its modules and its initramfs) is reported in the
manifest's `kernel` field (docs/baremetal.md), so that `cloud`, `generic` and
`server` kernels of one recipe can be compared. Sizes are the files' apparent sizes
in bytes, as the image's file system holds them.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osbake.arch import Arch

# The recipe's kernel kinds that name a flavour (osbake.arch has each arch's); `server`
# is the generic kernel, trimmed later by the server-kernel element.
FLAVOURED = ("cloud", "generic", "server")
SERVER_KERNEL_CONF = "etc/osbake/server-kernel.conf"
SERVER_KERNEL_STATE = "var/lib/osbake/server-kernel"


def debian_package(arch: Arch, kernel: str) -> str | None:
    """Debian's kernel package for a recipe's `kernel:` on an arch.

    cloud, generic and server name a flavour (None: Debian has none of that kind for
    the arch); none means no kernel ([] packages, so also None); anything else is a
    package name, returned as it is.
    """
    if kernel == "none":
        return None
    if kernel not in FLAVOURED:
        return kernel
    flavour = arch.info.kernel_flavour("generic" if kernel == "server" else kernel)
    return f"linux-image-{flavour}" if flavour else None


@dataclass
class KernelFootprint:
    flavour: str  # the recipe's kernel: cloud, generic, server or a package name
    release: str  # as `uname -r` says: version, then the flavour (6.1.0-26-<flavour>)
    vmlinuz: int
    modules: int  # everything under /lib/modules/<release>
    module_count: int
    initrd: int
    total: int = 0
    package: str | None = None
    version: str | None = None
    trim: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        self.total = self.vmlinuz + self.modules + self.initrd

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["trim"] is None:
            del data["trim"]
        return data


def booted_release(tree: Path) -> str | None:
    """The kernel the boot loader starts: /vmlinuz's target, else the newest in /boot."""
    link = tree / "vmlinuz"
    if link.is_symlink():
        name = Path(str(link.readlink())).name
        if name.startswith("vmlinuz-"):
            return name.removeprefix("vmlinuz-")
    kernels = sorted((tree / "boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name))
    return kernels[-1].name.removeprefix("vmlinuz-") if kernels else None


def measure(tree: Path, flavour: str) -> KernelFootprint | None:
    """The footprint of the kernel the image boots, or None for an image without one."""
    release = booted_release(tree)
    if release is None:
        return None
    vmlinuz = tree / "boot" / f"vmlinuz-{release}"
    initrd = tree / "boot" / f"initrd.img-{release}"
    modules_dir = _modules_dir(tree, release)
    modules = count = 0
    if modules_dir is not None:
        for path in modules_dir.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            modules += path.lstat().st_size
            if ".ko" in path.suffixes:
                count += 1
    return KernelFootprint(
        flavour=flavour,
        release=release,
        vmlinuz=_size(vmlinuz),
        modules=modules,
        module_count=count,
        initrd=_size(initrd),
        trim=server_trim(tree, release),
    )


def server_trim(tree: Path, release: str) -> dict[str, Any] | None:
    """What the server-kernel element left out, from its configuration in the image."""
    conf = tree / SERVER_KERNEL_CONF
    if not conf.is_file():
        return None
    values: dict[str, str] = {}
    for line in conf.read_text(encoding="utf-8", errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier():
            words = shlex.split(value, comments=True)
            values[name] = " ".join(words)
    removed_file = tree / SERVER_KERNEL_STATE / f"{release}.removed"
    removed = removed_file.read_text().splitlines() if removed_file.is_file() else []
    return {
        "families": values.get("FAMILIES", "").split(),
        "compress": values.get("COMPRESS", "none"),
        "removed_dependents": len([line for line in removed if line.strip()]),
    }


def _modules_dir(tree: Path, release: str) -> Path | None:
    # /lib is a relative symlink to usr/lib in merged-/usr trees; never follow a link
    # that could leave the tree.
    root = tree.resolve()
    for parent in ("usr/lib/modules", "lib/modules"):
        folder = (tree / parent / release).resolve()
        if folder.is_relative_to(root) and folder.is_dir():
            return folder
    return None


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() and not path.is_symlink() else 0


def _version_key(name: str) -> list[tuple[int, str]]:
    """Sort 6.1.0-9 before 6.1.0-10: digits as numbers, the rest as text."""
    key: list[tuple[int, str]] = []
    number = ""
    text = ""
    for char in name:
        if char.isdigit():
            if text:
                key.append((-1, text))
                text = ""
            number += char
        else:
            if number:
                key.append((int(number), ""))
                number = ""
            text += char
    if number:
        key.append((int(number), ""))
    if text:
        key.append((-1, text))
    return key
