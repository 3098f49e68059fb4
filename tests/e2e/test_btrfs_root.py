"""A cloud image with a btrfs root and a separate /var, built and booted for real under
TCG on a disk bigger than the image: btrfs-progs is in it, growroot grows the partition
and the file system, /var is mounted (its fstab line waits for a slow device and is
not nofail), and cloud-init finishes (its resizefs finds nothing left to do)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from osbake.manifest import load_manifest
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.e2e

GIB = 1 << 30
DONE = r"Cloud-init v\. \S+ finished at"


def osbake(*args: str | Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def btrfs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("btrfs")
    data = yaml.safe_load((EXAMPLES / "debian-cloud.yaml").read_text())
    data.pop("variants", None)
    data["name"] = "debian-cloud-btrfs"
    data["boot"] = ["bios", "uefi"]
    data["outputs"] = ["qcow2"]
    data["disk"] = {
        "table": "gpt",
        "partitions": [
            {"name": "esp", "type": "esp", "size": "127MiB", "fs": "vfat", "mount": "/boot/efi"},
            {"name": "bios", "type": "bios-grub", "size": "1MiB"},
            {"name": "var", "type": "linux", "size": "1GiB", "fs": "ext4", "mount": "/var"},
            {"name": "root", "type": "linux", "size": "rest", "fs": "btrfs", "mount": "/"},
        ],
    }
    recipe = folder / "debian-cloud-btrfs.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = folder / "out"
    result = osbake("build", recipe, "-o", out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_btrfs_progs_is_in_the_image(btrfs_image: Path) -> None:
    manifest = load_manifest(btrfs_image / "debian-cloud-btrfs.manifest.json")
    assert manifest.package("btrfs-progs") is not None


def test_inspect_reads_the_manifest_from_the_btrfs_root(btrfs_image: Path, tmp_path: Path) -> None:
    """Renamed, away from its manifest: read from the btrfs root partition (after /var's)."""
    renamed = tmp_path / "download.img"
    renamed.hardlink_to(btrfs_image / "debian-cloud-btrfs.qcow2")
    result = osbake("inspect", renamed, "--summary", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "inside download.img (partition 4, btrfs: /usr/share/osbake/manifest.json)" in (
        " ".join(result.stdout.split())
    )
    assert result.stdout.startswith("debian-cloud-btrfs ")


def test_a_btrfs_root_grows_at_first_boot(btrfs_image: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-O", "qcow2", btrfs_image / "debian-cloud-btrfs.qcow2", disk],
        check=True,
    )
    subprocess.run(["qemu-img", "resize", "-q", disk, "+2G"], check=True)
    user_data = tmp_path / "user-data"
    user_data.write_text(
        "#cloud-config\n"
        "runcmd:\n"
        "  - sh -c 'echo OSBAKE-ROOT $(findmnt -n -o FSTYPE /)"
        " $(df -B1 --output=size / | tail -1) > /dev/ttyS0'\n"
        "  - sh -c 'echo OSBAKE-VAR $(findmnt -n -o FSTYPE,OPTIONS /var) > /dev/ttyS0'\n"
    )
    seed = tmp_path / "seed.iso"
    made = osbake("seed", "-o", seed, "--user-data", user_data)
    assert made.returncode == 0, made.stderr
    log = tmp_path / "console.log"
    result = osbake(
        "boot", disk, "--seed", seed, "--accel", "tcg", "--timeout", "500",
        "--expect", "growroot: grew partition", "--expect", r"OSBAKE-ROOT btrfs \d+",
        "--expect", "OSBAKE-VAR ext4", "--expect", DONE,
        "--fail-on", "Kernel panic", "--fail-on", "emergency mode",
        "--console-log", log,
        timeout=600,
    )  # fmt: skip
    console = log.read_text(errors="replace")
    assert result.returncode == 0, result.stderr[-3000:] + console[-3000:]
    assert "cannot grow" not in console and "btrfs: not found" not in console
    size = int(re.search(r"OSBAKE-ROOT btrfs (\d+)", console).group(1))  # type: ignore[union-attr]
    manifest = load_manifest(btrfs_image / "debian-cloud-btrfs.manifest.json")
    assert manifest.disk is not None
    built = next(p["size"] for p in manifest.disk["partitions"] if p["name"] == "root")
    assert size > built + 3 * GIB // 2, f"the root file system has {size} bytes, built {built}"
    assert "Dependency failed" not in console and "emergency" not in console
