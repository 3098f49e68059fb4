"""examples/debian-lvm.yaml: / and /var on LVM logical volumes that osbake wrote itself.

LVM's own tools read the volume group from the image (through a read-only loop device,
nothing activated), and the image boots to cloud-init done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from osbake.manifest import load_manifest
from tests.conftest import ImageBuilds

pytestmark = pytest.mark.e2e

DONE = r"Cloud-init v\. \S+ finished at"


@pytest.fixture(scope="module")
def lvm_image(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-lvm.yaml")


def layout(out: Path) -> dict[str, Any]:
    disk = load_manifest(out / "debian-lvm.manifest.json").disk
    assert disk is not None
    return disk


@pytest.fixture
def pv_device(lvm_image: Path, tmp_path: Path) -> Iterator[str]:
    """The physical volume as a read-only loop device (the lvm tools read only devices)."""
    if os.geteuid() != 0:
        pytest.skip("a loop device needs root (CI runs the tests as root)")
    raw = tmp_path / "disk.raw"
    qcow2 = lvm_image / "debian-lvm.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
    pv = next(p for p in layout(lvm_image)["partitions"] if p["type"] == "lvm")
    device = subprocess.run(
        ["losetup", "--read-only", "--find", "--show", "--offset", str(pv["start"]),
         "--sizelimit", str(pv["size"]), str(raw)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def lvm_report(command: str, device: str, fields: str) -> list[dict[str, str]]:
    result = subprocess.run(
        [command, "--config", "global{activation=0}", "--devices", device,
         "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(result.stdout)["report"][0]
    return list(next(iter(report.values())))


def test_lvm_reads_the_volume_group_osbake_wrote(lvm_image: Path, pv_device: str) -> None:
    disk = layout(lvm_image)
    group = disk["volume_groups"][0]
    pvs = lvm_report("pvs", pv_device, "pv_name,vg_name,pv_uuid,pe_start,pv_size")
    assert pvs == [
        {
            "pv_name": pv_device,
            "vg_name": "vg0",
            "pv_uuid": group["pv_uuid"],
            "pe_start": str(1024**2),
            "pv_size": pvs[0]["pv_size"],
        }
    ]
    vgs = lvm_report("vgs", pv_device, "vg_name,vg_uuid,vg_extent_size,lv_count")
    assert vgs == [
        {"vg_name": "vg0", "vg_uuid": group["uuid"], "vg_extent_size": str(4 * 1024**2),
         "lv_count": "2"}
    ]  # fmt: skip
    lvs = lvm_report("lvs", pv_device, "lv_name,lv_uuid,lv_size,seg_pe_ranges")
    pv = next(p for p in disk["partitions"] if p["type"] == "lvm")
    expected = []
    for volume in group["volumes"]:
        first = (volume["start"] - pv["start"] - 1024**2) // group["extent_size"]
        last = first + volume["size"] // group["extent_size"] - 1
        expected.append(
            {
                "lv_name": volume["name"],
                "lv_uuid": volume["lv_uuid"],
                "lv_size": str(volume["size"]),
                "seg_pe_ranges": f"{pv_device}:{first}-{last}",
            }
        )
    assert lvs == expected
    check = subprocess.run(
        ["vgck", "--config", "global{activation=0}", "--devices", pv_device, "vg0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    # The file system of each volume is where its extents are.
    for volume in group["volumes"]:
        header = subprocess.run(
            ["dumpe2fs", "-h", f"{pv_device}?offset={volume['start'] - pv['start']}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert f"Filesystem UUID:          {volume['fs_uuid']}" in header


def test_root_and_var_on_lvm_boot_to_cloud_init_done(lvm_image: Path, tmp_path: Path) -> None:
    """With BIOS: GRUB's core image reads /boot from the volume (its lvm module). UEFI
    (shim and Debian's signed GRUB, which has lvm built in) was booted too when this was
    written; it is left out of the suite for time."""
    user_data = tmp_path / "user-data"
    user_data.write_text(
        "#cloud-config\n"
        "runcmd:\n"
        "  - sh -c 'echo OSBAKE-ROOT $(findmnt -n -o SOURCE,FSTYPE /) > /dev/ttyS0'\n"
        "  - sh -c 'echo OSBAKE-VAR $(findmnt -n -o SOURCE,FSTYPE /var) > /dev/ttyS0'\n"
        '  - sh -c \'echo OSBAKE-LVS $(lvs --noheadings -o lv_name,lv_active | tr -s " ")'
        " > /dev/ttyS0'\n"
    )
    console = tmp_path / "console.log"
    result = subprocess.run(
        [sys.executable, "-m", "osbake", "boot", str(lvm_image / "debian-lvm.qcow2"),
         "--firmware", "bios", "--accel", "tcg", "--datasource", "nocloud",
         "--user-data", str(user_data), "--expect", DONE, "--fail-on", "Kernel panic",
         "--fail-on", "emergency mode", "--timeout", "500", "--console-log", str(console)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    text = console.read_text(errors="replace")
    assert result.returncode == 0, result.stderr[-2000:] + text[-3000:]
    assert "OSBAKE-ROOT /dev/mapper/vg0-root ext4" in text
    assert "OSBAKE-VAR /dev/mapper/vg0-var ext4" in text
    assert "OSBAKE-LVS root active var active" in text


def test_a_renamed_lvm_image_leads_back_to_its_manifest(lvm_image: Path, tmp_path: Path) -> None:
    """osbake inspect without the manifest beside the image: read from / on vg0/root."""
    from osbake.inspect import inspect_artifact

    renamed = tmp_path / "download.img"
    os.link(lvm_image / "debian-lvm.qcow2", renamed)
    found = inspect_artifact(renamed)
    assert found.manifest.name == "debian-lvm"
    root = next(
        f"{group['name']}/{volume['name']}"
        for group in layout(lvm_image)["volume_groups"]
        for volume in group["volumes"]
        if volume.get("mount") == "/"
    )
    assert f"LVM {root}, ext4" in found.source
