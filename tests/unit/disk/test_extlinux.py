"""extlinux (U-Boot's distro boot, as on ARM boards): an arm64 firmware, a layout
without an ESP (U-Boot would prefer an ESP's BOOTAA64.EFI), and an extlinux.conf
that names the kernel, the initrd, root= and the arch's console."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from osbake.arch import Arch, Firmware
from osbake.disk import bootloader
from osbake.disk.layout import plan_disk
from osbake.disk.partition_table import place, sfdisk_script
from osbake.disk.sizes import MiB
from osbake.elements import Catalog, SearchPath, resolve
from osbake.errors import RecipeError
from osbake.outputs import needs_disk
from osbake.plan import _requests
from osbake.recipe import load

BOARD = "name: b\narch: [arm64]\nkernel: generic\nelements: [vm]\noutputs: [qcow2]\n"


def board_disk(tmp_path: Path, text: str = BOARD + "boot: [extlinux]\n"):  # type: ignore[no-untyped-def]
    path = tmp_path / "r.yaml"
    path.write_text(text)
    recipe = load(path)
    elements = resolve(Catalog(SearchPath.for_recipe(recipe.source_dirs)), _requests(recipe))
    return plan_disk(recipe, "arm64", elements, [o for o in recipe.outputs if needs_disk(o)])


def test_the_vm_layout_for_extlinux_is_the_root_alone(tmp_path: Path) -> None:
    disk = board_disk(tmp_path)
    assert [p.name for p in disk.partitions] == ["root"]  # no ESP, no bios-grub
    assert disk.root.mount == "/"
    # U-Boot's distro boot scans the partitions with GPT's LegacyBIOSBootable attribute.
    assert disk.root.legacy_bootable
    placed, _ = place(disk, {}, 2048 * MiB)
    assert 'name="root", attrs="LegacyBIOSBootable"' in sfdisk_script(disk, placed)


OWN_LAYOUT = """\
disk:
  partitions:
    - {name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}
    - {name: boot, size: 512MiB, fs: ext4, mount: /boot}
    - {name: root, size: rest, fs: ext4, mount: /}
"""


def test_u_boot_scans_the_boot_partition_not_only_the_first(tmp_path: Path) -> None:
    # U-Boot counts an ESP as bootable too: without the attribute on /boot it would
    # look for extlinux.conf on the ESP alone.
    disk = board_disk(tmp_path, BOARD + "boot: [extlinux]\n" + OWN_LAYOUT)
    assert [p.name for p in disk.partitions if p.legacy_bootable] == ["boot"]
    placed, _ = place(disk, {"esp": 127 * MiB, "boot": 512 * MiB}, 4096 * MiB)
    script = sfdisk_script(disk, placed)
    assert script.count("attrs=") == 1 and 'name="boot", attrs="LegacyBIOSBootable"' in script
    uefi = board_disk(tmp_path, BOARD + "boot: [uefi]\n" + OWN_LAYOUT)
    assert not [p for p in uefi.partitions if p.legacy_bootable]


ROOT_BTRFS = OWN_LAYOUT.replace("mount: /boot}", "mount: /srv}").replace(
    "size: rest, fs: ext4", "size: rest, fs: btrfs"
)
ROOT_ON_LVM = """\
disk:
  partitions:
    - {name: pv0, type: lvm, size: rest, vg: vg0}
  volume_groups:
    - {name: vg0, volumes: [{name: root, size: rest, fs: ext4, mount: /}]}
"""


@pytest.mark.parametrize(
    ("layout", "line", "says"),
    [
        (ROOT_BTRFS, 11, "partition 'root' holds the kernel for U-Boot"),
        (OWN_LAYOUT.replace("ext4, mount: /boot", "btrfs, mount: /boot"), 10, "not btrfs"),
        (ROOT_ON_LVM, None, "not from an LVM logical volume"),
    ],
)
def test_u_boot_reads_the_kernel_from_a_plain_ext4_or_vfat_partition(
    tmp_path: Path, layout: str, line: int | None, says: str
) -> None:
    with pytest.raises(RecipeError) as info:
        board_disk(tmp_path, BOARD + "boot: [extlinux]\n" + layout)
    assert says in info.value.message
    assert info.value.hint is not None and "/boot" in info.value.hint
    if line is not None:
        assert info.value.location is not None and info.value.location.line == line


def test_extlinux_conf_names_root_and_the_console(tmp_path: Path) -> None:
    disk = board_disk(tmp_path)
    cmdline = f"console=tty0 console={Arch.ARM64.info.console},115200"
    conf = bootloader.extlinux_conf(
        disk, "/boot/vmlinuz-6.1.0-9-arm64", "/boot/initrd.img-6.1.0-9-arm64", cmdline, "Debian"
    )
    assert "default osbake\n" in conf
    assert "\tlinux /boot/vmlinuz-6.1.0-9-arm64\n" in conf
    assert "\tinitrd /boot/initrd.img-6.1.0-9-arm64\n" in conf
    assert (
        f"\tappend root=UUID={disk.root.fs_uuid} ro console=tty0 console=ttyAMA0,115200\n" in conf
    )


def test_extlinux_boots_the_kernels_own_files(tmp_path: Path) -> None:
    disk = board_disk(tmp_path)
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-9-arm64").write_bytes(b"k")
    (tree / "boot/initrd.img-6.1.0-9-arm64").write_bytes(b"i")
    (tree / "vmlinuz").symlink_to("boot/vmlinuz-6.1.0-9-arm64")
    ctx = SimpleNamespace(tree=tree)
    paths = bootloader.versioned_kernel_paths(ctx, disk)  # type: ignore[arg-type]
    assert paths == ("/boot/vmlinuz-6.1.0-9-arm64", "/boot/initrd.img-6.1.0-9-arm64")


def test_extlinux_is_an_arm64_firmware_only(tmp_path: Path) -> None:
    assert Firmware.EXTLINUX in Arch.ARM64.info.firmwares
    assert Arch.ARM64.info.grub_package(Firmware.EXTLINUX) is None
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: x\nkernel: generic\nelements: [vm]\narch: [amd64]\nboot:\n  - extlinux\n"
    )
    with pytest.raises(RecipeError) as info:
        load(path)
    assert info.value.location is not None and info.value.location.line == 6
    assert "amd64 does not boot with extlinux" in info.value.message
    assert info.value.hint is not None and "amd64 boots with bios, uefi" in info.value.hint
