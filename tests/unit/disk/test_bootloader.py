from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

from osbake.disk import bootloader
from osbake.disk.partition_table import place
from osbake.disk.sizes import MiB
from tests.unit.disk.test_layout import LAYOUT, disk_plan


def test_bios_boot_code_points_at_the_core_image(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, LAYOUT.format(size="1GiB", root="rest"))
    placed, total = place(plan, {"esp": 127 * MiB, "bios": MiB}, plan.size)
    image = tmp_path / "disk.raw"
    mbr = bytearray(512)
    mbr[0x1BE:0x1CE] = b"\xee" * 16  # a protective entry that must survive
    mbr[0x1FE:] = b"\x55\xaa"
    image.write_bytes(bytes(mbr))
    with image.open("r+b") as handle:
        handle.truncate(total)
    boot = bytearray(b"\xeb\x63" + bytes(510))
    boot[0x1FE:] = b"\x55\xaa"
    core = bytes(range(256)) * 10  # 2560 bytes: 5 sectors
    (tmp_path / "boot.img").write_bytes(bytes(boot))
    (tmp_path / "core.img").write_bytes(core)
    setup = bootloader.BootSetup(core_img=tmp_path / "core.img", boot_img=tmp_path / "boot.img")
    bootloader.install_bios(image, plan, placed, setup)
    data = image.read_bytes()
    bios = next(p for p in placed if p.plan.name == "bios")
    start = bios.start // 512
    assert struct.unpack_from("<Q", data, 0x5C)[0] == start
    assert data[0x66:0x68] == b"\x90\x90"
    assert data[0x1BE:0x1CE] == b"\xee" * 16
    written = data[bios.start : bios.start + 2560]
    first, length, segment = struct.unpack_from("<QHH", written, 500)
    assert (first, length, segment) == (start + 1, 4, 0x820)
    assert written[512:] == core[512:]


def test_fstab_and_grub_cfg_use_uuids(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, LAYOUT.format(size="auto", root="rest"))
    fstab = bootloader.fstab(plan)
    assert f"UUID={plan.root.fs_uuid}\t/\text4" in fstab
    assert "/boot/efi\tvfat\tumask=0077" in fstab
    cfg = bootloader.grub_cfg(plan, "/vmlinuz", "/initrd.img", "console=ttyS0,115200", True)
    assert f"root=UUID={plan.root.fs_uuid} ro console=ttyS0,115200" in cfg
    assert "serial --unit=0" in cfg
    assert f"--set=root {plan.root.fs_uuid}" in bootloader.early_cfg(plan)


def test_a_separate_boot_partition_boots_the_newest_kernel(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="rest").replace(
        "  partitions:\n",
        "  partitions:\n    - {name: boot, type: xbootldr, size: 512MiB, fs: ext4, mount: /boot}\n",
    )
    plan = disk_plan(tmp_path, text)
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    for version in ("6.1.0-9-amd64", "6.1.0-10-amd64"):
        (tree / "boot" / f"vmlinuz-{version}").write_bytes(b"k")
        (tree / "boot" / f"initrd.img-{version}").write_bytes(b"i")
    ctx = SimpleNamespace(tree=tree)
    kernel, initrd = bootloader.kernel_paths(ctx, plan)  # type: ignore[arg-type]
    assert (kernel, initrd) == ("/vmlinuz-6.1.0-10-amd64", "/initrd.img-6.1.0-10-amd64")
