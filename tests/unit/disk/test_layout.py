"""Layouts are checked before any work, with the partition and the fix in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake.disk.layout import plan_disk
from osbake.disk.partition_table import place, sfdisk_script
from osbake.disk.sizes import MiB, format_size, parse_size
from osbake.elements import Catalog, SearchPath, resolve
from osbake.errors import RecipeError
from osbake.plan import _disk_outputs as disk_outputs
from osbake.plan import _requests
from osbake.recipe import load


def disk_plan(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "r.yaml"
    path.write_text(text)
    recipe = load(path)
    elements = resolve(Catalog(SearchPath.for_recipe(recipe.source_dirs)), _requests(recipe))
    return plan_disk(recipe, "amd64", elements, disk_outputs(recipe))


def failure(tmp_path: Path, text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        disk_plan(tmp_path, text)
    return info.value


LAYOUT = """\
name: d
kernel: cloud
boot: [bios, uefi]
outputs: [raw]
disk:
  size: {size}
  partitions:
    - {{name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}}
    - {{name: bios, type: bios-grub, size: 1MiB}}
    - {{name: root, size: {root}, fs: ext4, mount: /}}
"""


def test_sizes() -> None:
    assert parse_size("127MiB") == 127 * MiB
    assert parse_size("1.5GiB") == 1536 * MiB
    assert parse_size("2GB") == 2 * 10**9
    assert format_size(127 * MiB) == "127 MiB"
    with pytest.raises(ValueError, match="not a size"):
        parse_size("12 parsecs")


def test_vm_default_adapts_to_boot(tmp_path: Path) -> None:
    plan = disk_plan(
        tmp_path, "name: d\nkernel: cloud\nboot: [uefi]\nelements: [vm]\noutputs: [qcow2]\n"
    )
    assert [p.name for p in plan.partitions] == ["esp", "root"]
    plan = disk_plan(
        tmp_path, "name: d\nkernel: cloud\nboot: [bios]\nelements: [vm]\noutputs: [qcow2]\n"
    )
    assert [p.name for p in plan.partitions] == ["bios", "root"]


def test_uuids_are_derived_and_stable(tmp_path: Path) -> None:
    text = "name: d\nkernel: cloud\nboot: [bios, uefi]\nelements: [vm]\noutputs: [raw]\n"
    first, second = disk_plan(tmp_path, text), disk_plan(tmp_path, text)
    assert first.disk_uuid == second.disk_uuid
    assert [p.fs_uuid for p in first.partitions] == [p.fs_uuid for p in second.partitions]
    other = disk_plan(tmp_path, text.replace("name: d", "name: e"))
    assert other.root.fs_uuid != first.root.fs_uuid
    assert first.root.type_id == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


def test_root_larger_than_the_disk(tmp_path: Path) -> None:
    err = failure(tmp_path, LAYOUT.format(size="2GiB", root="3GiB"))
    assert "partition 'root'" in err.message
    assert "does not fit" in err.message
    assert "1.1 GiB more" in err.message or "GiB more" in err.message
    assert err.location is not None and err.location.line == 10


def test_esp_too_small(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="rest").replace("size: 127MiB", "size: 2MiB")
    err = failure(tmp_path, text)
    assert "partition 'esp' (2 MiB) is too small" in err.message
    assert "MiB more" in err.message


def test_two_roots(tmp_path: Path) -> None:
    text = (
        LAYOUT.format(size="auto", root="rest")
        + "    - {name: other, size: 1GiB, fs: ext4, mount: /}\n"
    )
    assert "two partitions are mounted on /" in failure(tmp_path, text).message


def test_esp_must_be_vfat(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="rest").replace("fs: vfat", "fs: ext4")
    assert "must be vfat" in failure(tmp_path, text).message


def test_esp_must_be_mounted_on_boot_efi(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="rest").replace("mount: /boot/efi", "mount: /efi")
    error = failure(tmp_path, text)
    assert "mounted on /efi" in error.message and "/boot/efi" in (error.hint or "")


def test_a_file_system_needs_a_mount_point(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="rest").replace(
        "  partitions:\n", "  partitions:\n    - {name: data, size: 64MiB, fs: ext4}\n"
    )
    error = failure(tmp_path, text)
    assert "'data' has a file system (ext4) but no mount point" in error.message
    assert "mount:" in (error.hint or "")


def test_sizes_the_schema_accepts_are_sizes(tmp_path: Path) -> None:
    assert parse_size("2Gi") == 2 * 1024**3
    plan = disk_plan(tmp_path, LAYOUT.format(size="2Gi", root="rest"))
    assert plan.size == 2 * 1024**3


def test_bios_grub_on_mbr(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="rest").replace(
        "  size: auto\n", "  size: auto\n  table: mbr\n"
    )
    assert "only exists on GPT" in failure(tmp_path, text).message


def test_uefi_without_esp(tmp_path: Path) -> None:
    text = (
        "\n".join(
            line
            for line in LAYOUT.format(size="auto", root="rest").splitlines()
            if "esp" not in line
        )
        + "\n"
    )
    assert "needs an EFI system partition" in failure(tmp_path, text).message


def test_percent_needs_a_fixed_disk(tmp_path: Path) -> None:
    assert "percent" in failure(tmp_path, LAYOUT.format(size="auto", root="50%")).message


def test_disk_output_without_layout(tmp_path: Path) -> None:
    err = failure(tmp_path, "name: d\noutputs: [qcow2]\n")
    assert "no disk layout" in err.message
    assert "vm" in (err.hint or "")


def test_xfs_is_refused_clearly(tmp_path: Path) -> None:
    text = LAYOUT.format(size="auto", root="rest").replace("fs: ext4", "fs: xfs")
    assert "xfs" in failure(tmp_path, text).message


def test_placement_is_aligned_and_leaves_room_for_gpt(tmp_path: Path) -> None:
    plan = disk_plan(tmp_path, LAYOUT.format(size="2GiB", root="rest"))
    sizes = {"esp": 127 * MiB, "bios": MiB}
    placed, total = place(plan, sizes, plan.size)
    assert total == 2048 * MiB
    assert all(p.start % MiB == 0 and p.size % MiB == 0 for p in placed)
    assert placed[-1].end <= total - 33 * 512
    script = sfdisk_script(plan, placed)
    assert "label: gpt" in script
    assert f"uuid={plan.root.part_uuid.upper()}" in script
    assert "attrs=" not in script  # GRUB needs no LegacyBIOSBootable partition


def test_the_outputs_say_which_are_made_from_the_disk() -> None:
    from osbake.outputs import needs_disk
    from osbake.recipe import OutputFormat

    made_from_disk = {str(f) for f in OutputFormat if needs_disk(f)}
    assert made_from_disk == {"raw", "qcow2", "vmdk", "vhd", "vhdx", "raw.tar.xz", "raw.tar.gz"}
    assert not needs_disk("no-such-format")


def test_a_tree_output_needs_no_layout(tmp_path: Path) -> None:
    text = "name: t\noutputs: [tar, oci]\n"
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert plan_disk(load(path), "amd64", [], disk_outputs(load(path))) is None
