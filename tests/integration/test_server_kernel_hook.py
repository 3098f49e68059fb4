"""The server-kernel hook with the real kmod and zstd, on a module tree made of small ELF files.

Each fake module is an ELF file whose .modinfo section names its dependencies,
which is all modinfo and depmod read from it.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from osbake.elements.catalog import BUILTIN_DIR

pytestmark = pytest.mark.integration

HOOK = BUILTIN_DIR / "server-kernel" / "lib" / "server-kernel"
VERSION = "6.1.0-99-amd64"


def fake_module(path: Path, depends: list[str]) -> None:
    name = path.name.removesuffix(".ko").replace("-", "_")
    modinfo = f"license=GPL\0depends={','.join(depends)}\0name={name}\0".encode()
    names = b"\0.modinfo\0.shstrtab\0"
    at_modinfo = 64
    at_names = at_modinfo + len(modinfo)
    at_headers = (at_names + len(names) + 7) & ~7
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, at_headers, 0, 64, 0, 0, 64, 3, 2)

    def section(name: int, kind: int, flags: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, flags, 0, offset, size, 0, 0, 1, 0)

    data = header + modinfo + names
    data += bytes(at_headers - len(data))
    data += bytes(64) + section(1, 1, 2, at_modinfo, len(modinfo))
    data += section(10, 3, 0, at_names, len(names))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


MODULES = {
    "sound/core/snd.ko": [],
    "sound/pci/snd-hda.ko": ["snd"],
    "drivers/media/v4l2-core/videodev.ko": [],
    "drivers/media/cec/core/cec.ko": ["rc-core"],
    "drivers/media/rc/rc-core.ko": [],
    "drivers/media/rc/ir-nec.ko": ["rc-core"],
    "drivers/gpu/drm/drm-display-helper.ko": ["cec"],
    "drivers/platform/x86/thinkpad-acpi.ko": ["snd"],
    "drivers/platform/x86/thinkpad-extra.ko": ["thinkpad_acpi"],  # gone in the 2nd round
    "drivers/net/ethernet/e1000e.ko": [],
    "fs/ext4/ext4.ko": ["jbd2"],
    "fs/jbd2/jbd2.ko": [],
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    kernel = tmp_path / "lib" / "modules" / VERSION / "kernel"
    for rel, depends in MODULES.items():
        fake_module(kernel / rel, depends)
    conf = tmp_path / "etc" / "osbake" / "server-kernel.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        'FAMILIES="sound media"\n'
        'EXCLUDE="sound drivers/media"\n'
        'INCLUDE="drivers/media/cec/core drivers/media/rc/rc-core.ko"\n'
        "COMPRESS=zstd\n"
    )
    return tmp_path


def hook(root: Path, action: str) -> str:
    env = {**os.environ, "SERVER_KERNEL_ROOT": str(root), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    result = subprocess.run(
        ["sh", str(HOOK), action, VERSION], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def files(root: Path) -> set[str]:
    kernel = root / "lib" / "modules" / VERSION / "kernel"
    return {str(p.relative_to(kernel)) for p in kernel.rglob("*") if p.is_file()}


def test_families_go_dependents_follow_the_rest_is_compressed(root: Path) -> None:
    out = hook(root, "install")
    assert files(root) == {
        "drivers/media/cec/core/cec.ko.zst",
        "drivers/media/rc/rc-core.ko.zst",
        "drivers/gpu/drm/drm-display-helper.ko.zst",  # its cec stayed
        "drivers/net/ethernet/e1000e.ko.zst",
        "fs/ext4/ext4.ko.zst",
        "fs/jbd2/jbd2.ko.zst",
    }
    assert "removing 4 modules of left-out families" in out
    assert "compressed 6 modules (zstd)" in out
    removed = (root / "var/lib/osbake/server-kernel" / f"{VERSION}.removed").read_text()
    assert removed.splitlines() == [
        "drivers/platform/x86/thinkpad-acpi.ko needs snd",
        "drivers/platform/x86/thinkpad-extra.ko needs thinkpad_acpi",
    ]
    dep = (root / "lib/modules" / VERSION / "modules.dep").read_text()
    # depmod ran after the compression (it links modules by symbols, which these lack)
    assert sorted(line.split(":")[0] for line in dep.splitlines()) == sorted(
        f"kernel/{name}" for name in files(root)
    )
    assert not (root / "lib/modules" / VERSION / "kernel/sound").exists()


def test_a_second_run_changes_nothing(root: Path) -> None:
    hook(root, "install")
    dep = root / "lib/modules" / VERSION / "modules.dep"
    before = (files(root), dep.stat().st_mtime_ns)
    assert hook(root, "install") == ""
    assert (files(root), dep.stat().st_mtime_ns) == before


def test_remove_deletes_what_dpkg_does_not_know(root: Path) -> None:
    hook(root, "install")
    hook(root, "remove")
    assert files(root) == set()
    assert not list((root / "var/lib/osbake/server-kernel").iterdir())


def test_xz_the_default_packs_modules_that_kmod_reads_back(root: Path) -> None:
    conf = root / "etc" / "osbake" / "server-kernel.conf"
    conf.write_text(conf.read_text().replace("COMPRESS=zstd", "COMPRESS=xz"))
    out = hook(root, "install")
    assert "compressed 6 modules (xz)" in out
    kernel = root / "lib" / "modules" / VERSION / "kernel"
    assert {p.name for p in kernel.rglob("*") if p.is_file()} == {
        "cec.ko.xz",
        "rc-core.ko.xz",
        "drm-display-helper.ko.xz",
        "e1000e.ko.xz",
        "ext4.ko.xz",
        "jbd2.ko.xz",
    }
    # The check the kernel's own xz decoder knows (CRC32), and kmod unpacks them.
    info = subprocess.run(
        ["xz", "--robot", "--list", str(kernel / "fs/ext4/ext4.ko.xz")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "\tCRC32\t" in info
    depends = subprocess.run(
        ["/usr/sbin/modinfo", "-F", "depends", str(kernel / "fs/ext4/ext4.ko.xz")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert depends.strip() == "jbd2"
