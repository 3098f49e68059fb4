"""examples/debian-luks.yaml: the root file system in LUKS2, encrypted offline by
`cryptsetup reencrypt` on a file (no device-mapper on the build host), unlocked at boot
by the key osbake put in the initramfs; the image boots to cloud-init done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from osbake.manifest import load_manifest
from tests.conftest import ImageBuilds

pytestmark = pytest.mark.e2e

DONE = r"Cloud-init v\. \S+ finished at"


@pytest.fixture(scope="module")
def luks_image(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-luks.yaml")


def test_the_root_partition_is_a_luks2_container(luks_image: Path, tmp_path: Path) -> None:
    disk = load_manifest(luks_image / "debian-luks.manifest.json").disk
    assert disk is not None
    root = next(p for p in disk["partitions"] if p["mount"] == "/")
    assert root["luks"]["name"] == "root_crypt" and root["luks"]["unlock"] == "initramfs"
    raw = tmp_path / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(luks_image / "debian-luks.qcow2"), str(raw)],
        check=True,
    )
    with raw.open("rb") as handle:
        handle.seek(root["start"])
        header = handle.read(root["size"] if root["size"] < 4096 else 4096)
    assert header[:6] == b"LUKS\xba\xbe" and header[6:8] == b"\x00\x02"  # LUKS2
    assert root["luks"]["uuid"].encode() in header
    # No trace of the plain file system: its superblock magic is not where ext4 has it.
    with raw.open("rb") as handle:
        handle.seek(root["start"] + 16 * 1024**2 + 1024 + 56)
        assert handle.read(2) != b"\x53\xef"


def test_a_luks_root_unlocked_by_its_key_boots(luks_image: Path, tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text(
        "#cloud-config\n"
        "runcmd:\n"
        "  - sh -c 'echo OSBAKE-ROOT $(findmnt -n -o SOURCE,FSTYPE /) > /dev/ttyS0'\n"
        "  - sh -c 'echo OSBAKE-CRYPT $(cryptsetup status root_crypt | grep type:)"
        " > /dev/ttyS0'\n"
    )
    console = tmp_path / "console.log"
    result = subprocess.run(
        [sys.executable, "-m", "osbake", "boot", str(luks_image / "debian-luks.qcow2"),
         "--accel", "tcg", "--datasource", "nocloud", "--user-data", str(user_data),
         "--expect", DONE, "--fail-on", "Kernel panic", "--fail-on", "emergency mode",
         "--fail-on", "Please unlock disk", "--timeout", "500", "--console-log", str(console)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    text = console.read_text(errors="replace")
    assert result.returncode == 0, result.stderr[-2000:] + text[-3000:]
    assert "OSBAKE-ROOT /dev/mapper/root_crypt ext4" in text
    assert "OSBAKE-CRYPT type: LUKS2" in text
