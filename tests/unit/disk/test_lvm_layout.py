"""LVM in the disk layout: checks with the line and the fix, placement, fstab, GRUB."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake.disk import bootloader, lvm
from osbake.disk.assemble import AssembledDisk, key, lvm_groups, place_volumes
from osbake.disk.partition_table import place
from osbake.disk.sizes import MiB
from osbake.inspect import disk_layout
from tests.unit.disk.test_layout import disk_plan, failure

LVM_LAYOUT = """\
name: d
kernel: cloud
boot: [bios, uefi]
outputs: [raw]
disk:
  size: {size}
  partitions:
    - {{name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}}
    - {{name: bios, type: bios-grub, size: 1MiB}}
    - {{name: pv0, type: lvm, size: {pv}, vg: vg0}}
  volume_groups:
    - name: vg0
      volumes:
        - {{name: root, size: {root}, fs: ext4, mount: /}}
        - {{name: var, size: 1GiB, fs: ext4, mount: /var}}
"""


def lvm_layout(size: str = "auto", pv: str = "rest", root: str = "rest") -> str:
    return LVM_LAYOUT.format(size=size, pv=pv, root=root)


def test_the_plan_has_the_volume_group(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, lvm_layout())
    assert plan.root.name == "root" and plan.root.volume_group == "vg0"
    assert plan.device(plan.root) == "/dev/mapper/vg0-root"
    assert plan.partitions[2].type_id == "E6D6D379-F507-44C2-A23C-238F2A3DF928"
    assert [p.mount for p in plan.by_mount()] == ["/", "/var", "/boot/efi"]
    group = plan.volume_groups[0]
    assert (group.pv, group.extent_size) == ("pv0", 4 * MiB)
    again = disk_plan(tmp_path, lvm_layout())
    assert again.volume_groups[0].id == group.id and again.root.fs_uuid == plan.root.fs_uuid


def test_volumes_are_placed_in_order_after_pe_start(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, lvm_layout(size="4GiB"))
    sizes = {"esp": 127 * MiB, "bios": MiB, "vg0/var": 1024 * MiB}
    placed, total = place(plan, sizes, plan.size)
    pv = placed[2]
    volumes = place_volumes(plan, placed, sizes)
    root, var = volumes
    assert root.start == pv.start + lvm.PE_START
    assert var.size == 1024 * MiB
    assert var.start == root.end and var.end <= pv.end
    assert root.size == (pv.size - lvm.PE_START) // (4 * MiB) * 4 * MiB - var.size
    group = lvm_groups(plan, placed, volumes)[0]
    assert [(v.name, v.start_extent, v.extents) for v in group.volumes] == [
        ("root", 0, root.size // (4 * MiB)),
        ("var", root.size // (4 * MiB), 256),
    ]
    described = AssembledDisk(tmp_path / "d", total, placed, volumes=volumes).describe(plan)
    assert described["volume_groups"][0]["volumes"][1]["start"] == var.start
    lines = disk_layout(described)
    assert "  3 pv0  lvm  " in lines[3] and "volume group vg0" in lines[3]
    assert lines[4] == "  LVM volume group vg0 on pv0, extents of 4 MiB"
    assert lines[6].startswith("    var  1 GiB  /dev/mapper/vg0-var  ext4  /var  UUID=")
    assert key(root.plan) == "vg0/root"


def test_root_on_lvm_boots_from_its_mapper_name(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, lvm_layout())
    cfg = bootloader.grub_cfg(plan, "/vmlinuz", "/initrd.img", "console=ttyS0", False)
    assert "root=/dev/mapper/vg0-root ro console=ttyS0" in cfg
    conf = bootloader.extlinux_conf(plan, "/vmlinuz-6.1.0-9-arm64", None, "console=ttyAMA0")
    assert "\tappend root=/dev/mapper/vg0-root ro console=ttyAMA0\n" in conf
    fstab = bootloader.fstab(plan)
    assert f"UUID={plan.root.fs_uuid}\t/\text4\terrors=remount-ro\t0\t1" in fstab
    var = next(v for v in plan.volumes if v.name == "var")
    assert f"UUID={var.fs_uuid}\t/var\text4\t" in fstab
    assert bootloader.grub_modules(plan, ["ext2"]) == ["ext2", "lvm"]
    # /boot on a partition: GRUB needs no lvm module.
    text = lvm_layout().replace(
        "    - {name: pv0,",
        "    - {name: boot, size: 512MiB, fs: ext4, mount: /boot}\n    - {name: pv0,",
    )
    assert bootloader.grub_modules(disk_plan(tmp_path, text), ["ext2"]) == ["ext2"]


def test_lvm_brings_lvm2(tmp_path: Path) -> None:
    from osbake.distros import get_distro
    from osbake.elements.catalog import Catalog, SearchPath
    from osbake.elements.resolver import resolve
    from osbake.plan import _packages, _requests
    from osbake.recipe import load

    path = tmp_path / "lvm.yaml"
    path.write_text(lvm_layout() + "distro: debian\nrelease: bookworm\narch: [amd64]\n")
    recipe = load(path)
    elements = resolve(Catalog(SearchPath.for_recipe(recipe.source_dirs)), _requests(recipe))
    distro = get_distro(recipe, recipe.arch[0], {})
    base, _ = _packages(recipe, elements, distro, disk_plan(tmp_path, path.read_text()))
    assert "lvm2" in base


@pytest.mark.parametrize(
    ("change", "message", "line"),
    [
        (("vg: vg0}", "vg: vg1}"), "holds volume group 'vg1', which disk.volume_groups", 10),
        (("type: lvm, ", ""), "holds volume group 'vg0', so its type is lvm", 10),
        (("vg: vg0}", "fs: ext4, mount: /srv, vg: vg0}"), "is an LVM physical volume", 10),
        (("name: var,", "name: root,"), "has two logical volumes named 'root'", 15),
        (("size: 1GiB", "size: rest"), "both take the rest of volume group 'vg0'", 15),
        (("mount: /var", "mount: /"), "and logical volume 'vg0/var' are both mounted on /", 15),
        (("name: vg0\n", "name: vg1\n"), "holds volume group 'vg0', which", 10),
        (("fs: ext4, mount: /var", "mount: /var"), "'vg0/var' has a mount point but no", 15),
        (("fs: ext4, mount: /var", "fs: ext4"), "'vg0/var' has a file system (ext4) but no", 15),
        (("fs: ext4, mount: /var", "fs: xfs, mount: /var"), "cannot make xfs", 15),
    ],
)
def test_bad_volume_groups_fail_at_their_line(
    tmp_path: Path, change: tuple[str, str], message: str, line: int
) -> None:
    error = failure(tmp_path, lvm_layout().replace(*change, 1))
    assert message in error.message
    assert error.location is not None and error.location.line == line
    assert error.hint


def test_a_volume_group_on_no_partition_or_two(tmp_path: Path) -> None:
    text = lvm_layout().replace(
        "type: lvm, size: rest, vg: vg0", "size: rest, fs: ext4, mount: /srv"
    )
    assert "volume group 'vg0' is on no partition" in failure(tmp_path, text).message
    text = lvm_layout().replace(
        "    - {name: pv0,", "    - {name: pv1, type: lvm, size: 1GiB, vg: vg0}\n    - {name: pv0,"
    )
    error = failure(tmp_path, text)
    assert "is on two partitions ('pv1' and 'pv0')" in error.message
    assert error.location is not None and error.location.line == 13


def test_volumes_larger_than_their_partition(tmp_path: Path) -> None:
    error = failure(
        tmp_path,
        lvm_layout(pv="2GiB", root="1GiB").replace(
            "1GiB, fs: ext4, mount: /var", "2GiB, fs: ext4, mount: /var"
        ),
    )
    assert "logical volume 'vg0/var' (2 GiB) does not fit on partition 'pv0'" in error.message
    assert "holds 2.0 GiB of extents, the logical volumes need 1.0 GiB more" in error.message
    assert error.location is not None and error.location.line == 15
    assert "make partition 'pv0' at least 3.0 GiB" in (error.hint or "")
    # Exactly full: 2 GiB less pe_start holds 511 extents of 4 MiB, not 512.
    disk_plan(tmp_path, lvm_layout(pv="2GiB", root="1020MiB"))


def test_root_on_lvm_needs_a_kernel(tmp_path: Path) -> None:
    text = lvm_layout().replace("kernel: cloud\nboot: [bios, uefi]\n", "kernel: none\n")
    text = (
        text.replace("    - {name: esp,", "    - {name: xesp,")
        .replace("    - {name: xesp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}\n", "")
        .replace("    - {name: bios, type: bios-grub, size: 1MiB}\n", "")
    )
    assert "the root file system is on LVM" in failure(tmp_path, text).message


@pytest.mark.parametrize(
    ("name", "volume", "problem"),
    [
        ("-vg", False, "is not a valid volume group name"),
        ("mapper", False, "/dev/mapper already"),
        ("..", False, "is not a valid"),
        ("snapshot", True, "LVM keeps it"),
        ("data_tmeta", True, "LVM keeps it"),
        ("has space", True, "is not a valid"),
    ],
)
def test_lvm_names_follow_lvms_rules(name: str, volume: bool, problem: str) -> None:
    from osbake.formats import FormatError, lvm_name

    with pytest.raises(FormatError, match=problem):
        lvm_name(name, "volume group name" if not volume else "logical volume name", volume)
    assert lvm_name("vg_0.a+b-c", "volume group name", False) == "vg_0.a+b-c"
