"""A layout that cannot work fails before the bootstrap, naming the partition and how much."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from osbake.disk.layout import plan_disk
from osbake.disk.partition_table import place, write_table
from osbake.disk.sizes import MiB
from osbake.elements import Catalog, SearchPath, resolve
from osbake.events import null_events
from osbake.plan import _requests
from osbake.recipe import load

pytestmark = pytest.mark.integration

RECIPE = """\
name: tight
kernel: cloud
boot: [uefi]
elements: [vm]
outputs: [qcow2]
disk:
  size: 2GiB
  partitions:
    - {{name: esp, type: esp, size: {esp}, fs: vfat, mount: /boot/efi}}
    - {{name: root, size: {root}, fs: ext4, mount: /}}
"""


@pytest.mark.parametrize(
    ("esp", "root", "expected"),
    [
        ("127MiB", "3GiB", "partition 'root' (3 GiB) does not fit"),
        ("3MiB", "rest", "partition 'esp' (3 MiB) is too small for the UEFI boot files"),
    ],
)
def test_layout_fails_before_bootstrap(tmp_path: Path, esp: str, root: str, expected: str) -> None:
    recipe = tmp_path / "tight.yaml"
    recipe.write_text(RECIPE.format(esp=esp, root=root))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "osbake",
            "build",
            str(recipe),
            "-o",
            str(tmp_path / "out"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "more" in result.stderr
    assert f"{recipe}:" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert not any(e["event"] == "step" for e in events)  # nothing was started


LVM_RECIPE = """\
name: tight-lvm
kernel: cloud
boot: [uefi]
outputs: [qcow2]
disk:
  partitions:
    - {name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}
    - {name: pv0, type: lvm, size: 2GiB, vg: vg0}
  volume_groups:
    - name: vg0
      volumes:
        - {name: root, size: 1GiB, fs: ext4, mount: /}
        - {name: var, size: 2GiB, fs: ext4, mount: /var}
"""


@pytest.mark.parametrize(
    ("change", "expected", "line"),
    [
        (("", ""), "logical volume 'vg0/var' (2 GiB) does not fit on partition 'pv0'", 13),
        (("name: var,", "name: var_rimage,"), "LVM keeps it for its own volumes", 13),
        (("name: vg0\n", "name: mapper\n"), "the system has /dev/mapper already", 10),
        (
            (
                "    - {name: pv0,",
                "    - {name: srv, size: 1GiB, fs: ext4, mount: /srv, luks: {key_file: ../key}}\n"
                "    - {name: pv0,",
            ),
            "key_file '../key' leaves the recipe's folder",
            8,
        ),
    ],
)
def test_lvm_layouts_fail_before_bootstrap_with_the_line(
    tmp_path: Path, change: tuple[str, str], expected: str, line: int
) -> None:
    recipe = tmp_path / "tight-lvm.yaml"
    recipe.write_text(LVM_RECIPE.replace(*change) if change[0] else LVM_RECIPE)
    result = subprocess.run(
        [sys.executable, "-m", "osbake", "validate", str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert f"{recipe}:{line}" in result.stderr


def test_u_boot_finds_the_boot_partition_by_its_gpt_attribute(tmp_path: Path) -> None:
    """The partition table sfdisk writes for boot: [extlinux] marks the partition holding
    /boot LegacyBIOSBootable (U-Boot's `part list -bootable`), and no other."""
    path = tmp_path / "board.yaml"
    path.write_text(
        "name: b\narch: [arm64]\nkernel: generic\nelements: [vm]\nboot: [extlinux]\n"
        "outputs: [raw]\ndisk:\n  partitions:\n"
        "    - {name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}\n"
        "    - {name: boot, size: 512MiB, fs: ext4, mount: /boot}\n"
        "    - {name: root, size: rest, fs: ext4, mount: /}\n"
    )
    recipe = load(path)
    elements = resolve(Catalog(SearchPath.for_recipe(recipe.source_dirs)), _requests(recipe))
    disk = plan_disk(recipe, "arm64", elements, ["raw"])
    assert disk is not None
    placed, total = place(disk, {"esp": 127 * MiB, "boot": 512 * MiB}, 1024 * MiB)
    image = tmp_path / "disk.raw"
    with image.open("wb") as handle:
        handle.truncate(total)
    write_table(image, disk, placed, null_events())
    dump = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True)
    table = json.loads(dump.stdout)["partitiontable"]
    attrs = {p["name"]: p.get("attrs") for p in table["partitions"]}
    assert attrs == {"esp": None, "boot": "LegacyBIOSBootable", "root": None}
