"""examples/debian-cloud.yaml built for real: a disk image with GPT, GRUB and a manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from osbake.manifest import Manifest, file_sha256, load_manifest
from tests.conftest import EXAMPLES, ImageBuilds

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cloud(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml")


@pytest.fixture(scope="module")
def raw_disk(cloud: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(cloud / "debian-cloud.qcow2"), str(raw)],
        check=True,
    )
    return raw


def test_qcow2_passes_qemu_img_check(cloud: Path) -> None:
    subprocess.run(
        ["qemu-img", "check", str(cloud / "debian-cloud.qcow2")], check=True, capture_output=True
    )
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(cloud / "debian-cloud.qcow2")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    manifest = load_manifest(cloud / "debian-cloud.manifest.json")
    assert info["virtual-size"] == manifest.disk["size"]  # type: ignore[index]
    assert info["actual-size"] < info["virtual-size"] / 2  # compressed


def test_artifacts_match_the_manifest(cloud: Path) -> None:
    manifest = load_manifest(cloud / "debian-cloud.manifest.json")
    assert {a.file for a in manifest.artifacts} == {"debian-cloud.qcow2", "debian-cloud.raw.tar.xz"}
    for artifact in manifest.artifacts:
        assert file_sha256(cloud / artifact.file) == artifact.sha256
    listing = subprocess.run(
        ["tar", "-tf", str(cloud / "debian-cloud.raw.tar.xz")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listing.split() == ["disk.raw"]


def test_partitions_are_aligned_and_recorded(cloud: Path, raw_disk: Path) -> None:
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(raw_disk)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    manifest = load_manifest(cloud / "debian-cloud.manifest.json")
    disk = manifest.disk
    assert disk is not None
    assert table["label"] == "gpt"
    assert table["id"].lower() == disk["disk_uuid"]
    assert len(table["partitions"]) == len(disk["partitions"]) == 3
    for found, recorded in zip(table["partitions"], disk["partitions"], strict=True):
        assert found["start"] % 2048 == 0  # 1 MiB boundaries
        assert found["start"] * 512 == recorded["start"]
        assert found["size"] * 512 == recorded["size"]
        assert found["uuid"].lower() == recorded["part_uuid"]
    root = next(p for p in disk["partitions"] if p["mount"] == "/")
    header = subprocess.run(
        ["dumpe2fs", "-h", f"{raw_disk}?offset={root['start']}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Filesystem UUID:          {root['fs_uuid']}" in header
    # size: auto gives the contents plus the requested 256 MiB free, not a guess
    assert 256 * 2**20 <= root["free"] <= 300 * 2**20


def test_boot_files_are_in_place(cloud: Path, raw_disk: Path) -> None:
    manifest = load_manifest(cloud / "debian-cloud.manifest.json")
    assert manifest.disk is not None
    esp = next(p for p in manifest.disk["partitions"] if p["type"] == "esp")
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{raw_disk}@@{esp['start']}", "::/EFI/BOOT"],
        capture_output=True,
        text=True,
        check=True,
        env={"MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    names = {Path(line).name.upper() for line in listing.split()}
    assert {"BOOTX64.EFI", "GRUBX64.EFI", "MMX64.EFI"} <= names
    mbr = raw_disk.read_bytes()[:512]
    assert mbr[0x1FE:] == b"\x55\xaa"
    assert mbr[0x66:0x68] == b"\x90\x90"  # GRUB's boot code, set up for a hard disk
    assert manifest.boot == ["bios", "uefi", "uefi-secureboot"]
    assert "console=ttyS0,115200" in manifest.cmdline
    root = next(p for p in manifest.disk["partitions"] if p["mount"] == "/")
    fstab = subprocess.run(
        ["debugfs", "-R", "cat /etc/fstab", f"{raw_disk}?offset={root['start']}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"UUID={root['fs_uuid']}\t/\text4" in fstab


def test_first_boot_does_not_do_work_twice(cloud: Path, raw_disk: Path) -> None:
    """growroot grows / at every boot, so cloud-init's growpart and resizefs are off; an
    image without LVM does not reap e2scrub's LVM snapshots at boot; resolved sends no
    single-label name to LLMNR, where it would wait for nobody."""
    manifest = load_manifest(cloud / "debian-cloud.manifest.json")
    assert manifest.disk is not None
    root = next(p for p in manifest.disk["partitions"] if p["mount"] == "/")

    def debugfs(request: str) -> str:
        return subprocess.run(
            ["debugfs", "-R", request, f"{raw_disk}?offset={root['start']}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    config = debugfs("cat /etc/cloud/cloud.cfg.d/91-osbake-growroot.cfg")
    assert 'mode: "off"' in config and "resize_rootfs: false" in config
    wants = debugfs("ls -l /etc/systemd/system/multi-user.target.wants")
    assert "systemd-networkd.service" in wants and "e2scrub_reap.service" not in wants
    assert "osbake-growroot.service" in debugfs("ls -l /etc/systemd/system/sysinit.target.wants")
    resolved = debugfs("cat /etc/systemd/resolved.conf.d/50-osbake.conf")
    assert "LLMNR=no" in resolved and "MulticastDNS=no" in resolved


def build_cloud(out: Path) -> Manifest:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "osbake",
            "build",
            str(EXAMPLES / "debian-cloud.yaml"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return load_manifest(out / "debian-cloud.manifest.json")


def test_an_unchanged_rebuild_comes_from_the_cache(cloud: Path, tmp_path: Path) -> None:
    """Every step, the disk and the outputs are reused; the artifacts are the same bytes.

    Two builds back to back: the mirror may have moved since the shared build (its
    state is in the bootstrap's key), and then the first of these rebuilds.
    """
    first = build_cloud(tmp_path / "first")
    again = build_cloud(tmp_path / "again")
    assert [s.key for s in again.steps] == [s.key for s in first.steps], "the mirror moved"
    assert {s.name: s.status for s in again.steps} == {s.name: "cached" for s in first.steps}
    assert again.disk == first.disk
    assert {a.file: a.sha256 for a in again.artifacts} == {
        a.file: a.sha256 for a in first.artifacts
    }
    for artifact in again.artifacts:
        assert file_sha256(tmp_path / "again" / artifact.file) == artifact.sha256
