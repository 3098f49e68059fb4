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
    assert "menuentry 'Linux' --id osbake {" in cfg


def test_the_menu_title_is_the_distros_and_quoted(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, LAYOUT.format(size="auto", root="rest"))
    cfg = bootloader.grub_cfg(plan, "/vmlinuz", None, "", False, "Debian GNU/Linux")
    assert "menuentry 'Debian GNU/Linux' --id osbake {" in cfg
    cfg = bootloader.grub_cfg(plan, "/vmlinuz", None, "", False, "Bob's OS")
    assert "menuentry 'Bob'\\''s OS' --id osbake {" in cfg


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


def test_fstab_lets_slow_devices_come_and_optional_mounts_be_missing(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="8GiB") + (
        "    - {name: var, size: 1GiB, fs: ext4, mount: /var}\n"
        "    - {name: log, size: 1GiB, fs: ext4, mount: /var/log}\n"
        "    - {name: home, size: 1GiB, fs: btrfs, mount: /home}\n"
        "    - {name: srv, size: 1GiB, fs: ext4, mount: /srv, options: 'noatime'}\n"
        "    - {name: swap, type: swap, size: 1GiB, fs: swap}\n"
    )
    plan = disk_plan(tmp_path, text)
    lines = {
        line.split("\t")[1]: line.split("\t")[3]
        for line in bootloader.fstab(plan).splitlines()
        if not line.startswith("#")
    }
    wait = "x-systemd.device-timeout=300s"
    # The root is mounted by the initramfs: its line stays as it was.
    assert lines["/"] == "errors=remount-ro"
    # The system cannot run without /var: it waits for the device, never nofail.
    for essential in ("/var", "/var/log"):
        assert wait in lines[essential] and "nofail" not in lines[essential]
        assert "x-systemd.mount-timeout=300s" in lines[essential]
    # The rest may be missing (the boot goes on) and may come late.
    for optional in ("/boot/efi", "/home", "none"):
        assert wait in lines[optional] and "nofail" in lines[optional].split(",")
    assert lines["/boot/efi"].startswith("umask=0077,")
    # A recipe's own options are kept; osbake adds the wait, not nofail.
    assert lines["/srv"] == f"noatime,{wait},x-systemd.mount-timeout=300s"


def test_a_btrfs_root_brings_btrfs_progs(tmp_path: Path) -> None:
    from osbake.distros import get_distro
    from osbake.elements.catalog import Catalog, SearchPath
    from osbake.elements.resolver import resolve
    from osbake.plan import _packages, _requests
    from osbake.recipe import load

    def packages(fs: str) -> list[str]:
        path = tmp_path / f"{fs}.yaml"
        path.write_text(
            LAYOUT.format(size="auto", root="rest").replace("fs: ext4", f"fs: {fs}")
            + "distro: debian\nrelease: bookworm\narch: [amd64]\nelements: [vm]\n"
        )
        recipe = load(path)
        catalog = Catalog(SearchPath.for_recipe(recipe.source_dirs))
        elements = resolve(catalog, _requests(recipe))
        distro = get_distro(recipe, recipe.arch[0], {})
        disk = disk_plan(tmp_path, path.read_text())
        base, _ = _packages(recipe, elements, distro, disk)
        return base

    assert "btrfs-progs" in packages("btrfs")
    assert "btrfs-progs" not in packages("ext4")
