"""LUKS2 partitions: checks with the line and the fix, crypttab, root=, the key's path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from osbake.disk import bootloader
from osbake.errors import RecipeError
from osbake.recipe.model import LuksUnlock
from tests.unit.disk.test_layout import disk_plan, failure

LUKS_LAYOUT = """\
name: d
kernel: cloud
boot: [bios, uefi]
outputs: [raw]
disk:
  partitions:
    - {{name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}}
    - {{name: bios, type: bios-grub, size: 1MiB}}
    - {{name: boot, size: 512MiB, fs: ext4, mount: /boot}}
    - {{name: root, size: rest, fs: ext4, mount: /, luks: {luks}}}
"""


def luks_layout(tmp_path: Path, luks: str = "{key_file: root.key, unlock: initramfs}") -> str:
    (tmp_path / "root.key").write_bytes(b"k3y")
    return LUKS_LAYOUT.format(luks=luks)


def test_the_plan_has_the_container_and_the_keys_digest_not_the_key(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, luks_layout(tmp_path))
    luks = plan.root.luks
    assert luks is not None
    assert luks.name == "root_crypt" and luks.unlock == LuksUnlock.INITRAMFS
    assert luks.key_sha256 == hashlib.sha256(b"k3y").hexdigest()
    assert "k3y" not in repr(plan)
    assert luks.read_key() == b"k3y"
    assert plan.device(plan.root) == "/dev/mapper/root_crypt"
    assert disk_plan(tmp_path, luks_layout(tmp_path)).root.luks == luks  # derived, stable
    cfg = bootloader.grub_cfg(plan, "/vmlinuz", "/initrd.img", "", False)
    assert "root=/dev/mapper/root_crypt ro" in cfg
    # U-Boot's extlinux.conf gives the kernel the same root= as grub.cfg.
    conf = bootloader.extlinux_conf(plan, "/vmlinuz-6.1.0-9-arm64", None, "console=ttyAMA0")
    assert "\tappend root=/dev/mapper/root_crypt ro console=ttyAMA0\n" in conf
    tab = bootloader.crypttab(plan)
    assert (
        f"root_crypt\tUUID={luks.uuid}\t/etc/cryptsetup-keys.d/root_crypt.key"
        "\tluks,discard,initramfs" in tab
    )
    assert f"UUID={plan.root.fs_uuid}\t/\text4" in bootloader.fstab(plan)


def test_a_prompt_puts_no_key_in_the_image(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, luks_layout(tmp_path, "{key_file: root.key}"))
    assert plan.root.luks is not None and plan.root.luks.unlock == LuksUnlock.PROMPT
    assert f"UUID={plan.root.luks.uuid}\tnone\tluks" in bootloader.crypttab(plan)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("    - {name: boot, size: 512MiB, fs: ext4, mount: /boot}\n", ""),
            "the root partition 'root' is encrypted, so GRUB cannot read the kernel",
        ),
        (
            ("fs: ext4, mount: /boot}", "fs: ext4, mount: /boot, luks: {key_file: root.key}}"),
            "holds /boot, which GRUB reads before anything is unlocked",
        ),
        (
            ("size: 512MiB, fs: ext4, mount: /boot}", "size: 40MiB, fs: ext4, mount: /boot}"),
            None,
        ),
    ],
)
def test_bad_luks_layouts(tmp_path: Path, change: tuple[str, str], message: str | None) -> None:
    text = luks_layout(tmp_path).replace(*change)
    if message is None:
        disk_plan(tmp_path, text)
        return
    error = failure(tmp_path, text)
    assert message in error.message and error.hint
    assert error.location is not None and error.location.line in (9, 10)


def test_luks_on_swap_or_too_small(tmp_path: Path) -> None:
    text = luks_layout(tmp_path) + (
        "    - {name: swap, type: swap, size: 1GiB, fs: swap, luks: {key_file: root.key}}\n"
    )
    assert (
        "encrypts ext4 and btrfs partitions with LUKS, not swap" in failure(tmp_path, text).message
    )
    text = luks_layout(tmp_path) + (
        "    - {name: srv, size: 48MiB, fs: ext4, mount: /srv, luks: {key_file: root.key}}\n"
    )
    assert "(48MiB) is too small for LUKS" in failure(tmp_path, text).message


def test_the_key_file_must_be_inside_the_recipes_folder(tmp_path: Path) -> None:
    folder = tmp_path / "recipe"
    folder.mkdir()
    (tmp_path / "outside.key").write_bytes(b"x")
    for bad, problem in (
        ("../outside.key", "key_file '../outside.key' leaves the recipe's folder"),
        ("/etc/shadow", "key_file '/etc/shadow'"),
        ("missing.key", "does not exist"),
    ):
        with pytest.raises(RecipeError) as info:
            disk_plan(folder, LUKS_LAYOUT.format(luks=f"{{key_file: {bad}}}"))
        assert problem in info.value.message
        assert info.value.location is not None and info.value.location.line == 10
    (folder / "link.key").symlink_to(tmp_path / "outside.key")
    with pytest.raises(RecipeError):
        disk_plan(folder, LUKS_LAYOUT.format(luks="{key_file: link.key}"))
    (folder / "empty.key").write_bytes(b"")
    with pytest.raises(RecipeError, match="is empty"):
        disk_plan(folder, LUKS_LAYOUT.format(luks="{key_file: empty.key}"))


def test_luks_brings_cryptsetup_initramfs(tmp_path: Path) -> None:
    from osbake.distros.debian import Debian

    assert Debian.filesystem_packages(object.__new__(Debian), ["luks"]) == [
        "cryptsetup",
        "cryptsetup-initramfs",
    ]


def test_a_separate_boot_hides_the_esp_with_it(tmp_path: Path) -> None:
    """Making / hides /boot only: /boot/efi is inside it (its folder is not in the tmpfs)."""
    from osbake.disk.assemble import _nested_mounts

    plan = disk_plan(tmp_path, luks_layout(tmp_path))
    assert _nested_mounts(plan, plan.root) == ["/boot"]
    boot = next(p for p in plan.partitions if p.mount == "/boot")
    assert _nested_mounts(plan, boot) == ["/boot/efi"]


def test_the_manifest_and_inspect_show_the_container(tmp_path: Path) -> None:
    from osbake.disk.assemble import AssembledDisk
    from osbake.disk.partition_table import place
    from osbake.disk.sizes import MiB
    from osbake.inspect import disk_layout

    plan = disk_plan(tmp_path, luks_layout(tmp_path))
    sizes = {"esp": 127 * MiB, "bios": MiB, "boot": 512 * MiB, "root": 1024 * MiB}
    placed, total = place(plan, sizes, None)
    described = AssembledDisk(tmp_path / "d", total, placed).describe(plan)
    assert plan.root.luks is not None
    assert described["partitions"][3]["luks"] == {
        "name": "root_crypt",
        "uuid": plan.root.luks.uuid,
        "unlock": "initramfs",
        "device": "/dev/mapper/root_crypt",
    }
    assert "key" not in str(described["partitions"][3]["luks"])
    line = disk_layout(described)[4]
    assert line.startswith(
        "  4 root  linux  1 GiB  LUKS2 /dev/mapper/root_crypt (unlock: initramfs"
    )
    assert line.endswith(f"ext4  /  UUID={plan.root.fs_uuid}")


LVM_LUKS_LAYOUT = """\
name: d
kernel: cloud
boot: [bios, uefi]
outputs: [raw]
disk:
  partitions:
    - {name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}
    - {name: bios, type: bios-grub, size: 1MiB}
    - {name: boot, size: 512MiB, fs: ext4, mount: /boot}
    - {name: pv0, type: lvm, size: rest, vg: vg-0}
  volume_groups:
    - name: vg-0
      volumes:
        - name: root
          size: rest
          fs: ext4
          mount: /
          luks: {key_file: root.key, unlock: initramfs}
        - {name: srv, size: 1GiB, fs: ext4, mount: /srv}
"""


def test_a_logical_volume_in_luks_is_unlocked_after_lvm(tmp_path: Path) -> None:
    (tmp_path / "root.key").write_bytes(b"k3y")
    plan = disk_plan(tmp_path, LVM_LUKS_LAYOUT)
    luks = plan.root.luks
    assert luks is not None and plan.root.volume_group == "vg-0"
    assert luks.name == "vg--0-root_crypt" and luks.read_key() == b"k3y"
    assert plan.encrypted == [plan.root]
    # The container's device is the LV's; what is mounted is the unlocked mapping.
    assert plan.group("vg-0").device(plan.root) == "/dev/mapper/vg--0-root"
    assert plan.device(plan.root) == "/dev/mapper/vg--0-root_crypt"
    assert "root=/dev/mapper/vg--0-root_crypt ro" in bootloader.grub_cfg(
        plan, "/vmlinuz", "/initrd.img", "", False
    )
    assert bootloader.crypttab(plan).splitlines()[1:] == [
        f"vg--0-root_crypt\tUUID={luks.uuid}\t/etc/cryptsetup-keys.d/vg--0-root_crypt.key"
        "\tluks,discard,initramfs"
    ]
    # Its UUID is its own: not a partition's of the same name, nor another layout's.
    partition = disk_plan(tmp_path, luks_layout(tmp_path)).root.luks
    assert partition is not None and partition.uuid != luks.uuid
    srv = next(v for v in plan.volumes if v.name == "srv")
    assert srv.luks is None and plan.device(srv) == "/dev/mapper/vg--0-srv"


def test_the_manifest_shows_a_logical_volumes_container(tmp_path: Path) -> None:
    from osbake.disk.assemble import AssembledDisk, place_volumes
    from osbake.disk.partition_table import place
    from osbake.disk.sizes import MiB

    (tmp_path / "root.key").write_bytes(b"k3y")
    plan = disk_plan(tmp_path, LVM_LUKS_LAYOUT)
    sizes = {"esp": 127 * MiB, "bios": MiB, "boot": 512 * MiB, "pv0": 4096 * MiB}
    sizes["vg-0/srv"] = 1024 * MiB
    placed, total = place(plan, sizes, None)
    volumes = place_volumes(plan, placed, sizes)
    described = AssembledDisk(tmp_path / "d", total, placed, volumes=volumes).describe(plan)
    root, srv = described["volume_groups"][0]["volumes"]
    assert plan.root.luks is not None
    assert root["device"] == "/dev/mapper/vg--0-root"
    assert root["luks"] == {
        "name": "vg--0-root_crypt",
        "uuid": plan.root.luks.uuid,
        "unlock": "initramfs",
        "device": "/dev/mapper/vg--0-root_crypt",
    }
    assert "luks" not in srv


SRV = "{name: srv, size: 1GiB, fs: ext4, mount: /srv}"


@pytest.mark.parametrize(
    ("change", "message", "line"),
    [
        (
            ("    - {name: boot, size: 512MiB, fs: ext4, mount: /boot}\n", ""),
            "the root logical volume 'vg-0/root' is encrypted, so GRUB cannot read the kernel",
            17,  # the root's luks: key
        ),
        (
            (SRV, "{name: srv, size: 48MiB, fs: ext4, mount: /srv, luks: {key_file: root.key}}"),
            "logical volume 'vg-0/srv' (48MiB) is too small for LUKS",
            19,
        ),
        (
            (SRV, "{name: sw, size: 1GiB, fs: swap, luks: {key_file: root.key}}"),
            "logical volume 'vg-0/sw': osbake encrypts ext4 and btrfs logical volumes with "
            "LUKS, not swap",
            19,
        ),
        (
            (SRV, "{name: srv, size: 1GiB, fs: ext4, mount: /srv, luks: {key_file: no.key}}"),
            "does not exist",
            19,
        ),
    ],
)
def test_bad_luks_logical_volumes_fail_at_their_line(
    tmp_path: Path, change: tuple[str, str], message: str, line: int
) -> None:
    (tmp_path / "root.key").write_bytes(b"k3y")
    error = failure(tmp_path, LVM_LUKS_LAYOUT.replace(*change))
    assert message in error.message and error.hint
    assert error.location is not None and error.location.line == line


def test_inspect_shows_a_logical_volumes_container() -> None:
    from osbake.inspect import disk_layout

    volume = {"name": "root", "size": 2**30, "device": "/dev/mapper/vg0-root", "fs": "ext4"}
    volume |= {"mount": "/", "fs_uuid": "F", "luks": {"device": "/dev/mapper/vg0-root_crypt"}}
    volume["luks"] |= {"unlock": "initramfs", "uuid": "L"}
    disk = {"table": "gpt", "volume_groups": [{"name": "vg0", "pv": "pv0", "volumes": [volume]}]}
    assert disk_layout(disk)[-1] == (
        "    root  1 GiB  /dev/mapper/vg0-root  LUKS2 /dev/mapper/vg0-root_crypt "
        "(unlock: initramfs, UUID=L)  ext4  /  UUID=F"
    )
