"""examples/debian-lvm-luks.yaml: the root file system in LUKS2 on an LVM logical
volume, encrypted offline on a file and written at the volume's extents; the initramfs
activates the volume group, then unlocks the volume with the key osbake put in it, and
the image boots to cloud-init done. Slow (a build and a TCG boot): `make test-slow`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from osbake.manifest import load_manifest
from tests.conftest import ImageBuilds

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DONE = r"Cloud-init v\. \S+ finished at"


@pytest.fixture(scope="module")
def lvm_luks_image(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-lvm-luks.yaml")


def test_a_luks_root_on_a_logical_volume_boots(lvm_luks_image: Path, tmp_path: Path) -> None:
    disk = load_manifest(lvm_luks_image / "debian-lvm-luks.manifest.json").disk
    assert disk is not None
    root = disk["volume_groups"][0]["volumes"][0]
    assert root["luks"]["name"] == "vg0-root_crypt" and root["device"] == "/dev/mapper/vg0-root"
    raw = tmp_path / "disk.raw"
    image = lvm_luks_image / "debian-lvm-luks.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    with raw.open("rb") as handle:
        handle.seek(root["start"])
        header = handle.read(4096)
    assert header[:6] == b"LUKS\xba\xbe" and header[6:8] == b"\x00\x02"  # at the LV's extents
    assert root["luks"]["uuid"].encode() in header
    raw.unlink()
    user_data = tmp_path / "user-data"
    user_data.write_text(
        "#cloud-config\n"
        "runcmd:\n"
        "  - sh -c 'echo OSBAKE-ROOT $(findmnt -n -o SOURCE,FSTYPE /) > /dev/ttyS0'\n"
        "  - sh -c 'echo OSBAKE-CRYPT $(cryptsetup status vg0-root_crypt"
        ' | grep -E "type:|device:") > /dev/ttyS0\'\n'
    )
    console = tmp_path / "console.log"
    result = subprocess.run(
        [sys.executable, "-m", "osbake", "boot", str(image),
         "--accel", "tcg", "--datasource", "nocloud", "--user-data", str(user_data),
         "--expect", DONE, "--fail-on", "Kernel panic", "--fail-on", "emergency mode",
         "--fail-on", "Please unlock disk", "--timeout", "600", "--console-log", str(console)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    text = console.read_text(errors="replace")
    assert result.returncode == 0, result.stderr[-2000:] + text[-3000:]
    assert "OSBAKE-ROOT /dev/mapper/vg0-root_crypt ext4" in text
    assert "OSBAKE-CRYPT type: LUKS2 device: /dev/mapper/vg0-root" in text
