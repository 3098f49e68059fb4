"""What deploy refuses, with the real tools: the message says why and the target is untouched."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osbake.deploy.target import Host, check_target, describe_target
from osbake.errors import UsageError
from tests.integration.deploy_disks import MIB, SampleDisk, make_disk, sh

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> SampleDisk:
    return make_disk(tmp_path_factory.mktemp("disk"))


def osbake(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def digest(path: Path | str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "target.img"
    path.write_bytes(b"precious data " * (64 * MIB // 14))
    return path


def copy_with_manifest(disk: SampleDisk, folder: Path) -> Path:
    """The qcow2 and its manifest in a folder of their own, to be damaged there."""
    folder.mkdir()
    shutil.copy(disk.qcow2, folder)
    shutil.copy(disk.manifest, folder)
    return folder / disk.qcow2.name


def test_corrupted_image(tmp_path: Path, disk: SampleDisk, target: Path) -> None:
    image = copy_with_manifest(disk, tmp_path / "corrupt")
    with image.open("r+b") as handle:
        handle.seek(image.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    before = digest(target)
    result = osbake("deploy", image, target)
    assert result.returncode == 2
    assert "does not match its checksum (manifest disk.manifest.json)" in result.stderr
    assert "the target was not touched" in result.stderr
    assert "Traceback" not in result.stderr
    assert digest(target) == before


def test_truncated_image(tmp_path: Path, disk: SampleDisk, target: Path) -> None:
    image = copy_with_manifest(disk, tmp_path / "truncated")
    os.truncate(image, image.stat().st_size - 100_000)
    before = digest(target)
    result = osbake("deploy", image, target)
    assert result.returncode == 2
    assert "it is truncated or is not the file the manifest describes" in result.stderr
    assert digest(target) == before
    # Without its manifest, reading it finds the truncation (before writing past it).
    (image.parent / "disk.manifest.json").unlink()
    result = osbake("deploy", image, target, "--no-checksum")
    assert result.returncode == 2
    assert "truncated" in result.stderr


def test_target_too_small(disk: SampleDisk, tmp_path: Path) -> None:
    small = tmp_path / "small.img"
    small.write_bytes(b"x" * (40 * MIB))
    before = digest(small)
    result = osbake("deploy", disk.raw, small)
    assert result.returncode == 2
    assert "is too small: it has 40.0 MiB" in result.stderr
    assert digest(small) == before
    # Room for the image but not for the config partition after it.
    exact = tmp_path / "exact.img"
    exact.write_bytes(b"y" * disk.size)
    seed = tmp_path / "seed.iso"
    assert osbake("seed", "-o", seed, "--format", "configdrive").returncode == 0
    result = osbake("deploy", disk.raw, exact, "--configdrive", seed)
    assert result.returncode == 2
    assert "too small" in result.stderr
    assert exact.read_bytes() == b"y" * disk.size


def test_qcow2_overlay_is_refused(tmp_path: Path, disk: SampleDisk, target: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", disk.qcow2, "-F", "qcow2", overlay)
    result = osbake("deploy", overlay, target, "--no-checksum")
    assert result.returncode == 2
    assert "backing file" in result.stderr
    assert "qemu-img convert" in result.stderr


@pytest.mark.needs_root
def test_mounted_target_is_refused(tmp_path: Path, disk: SampleDisk) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a loop device (CI runs as root)")
    fs_image = tmp_path / "fs.img"
    fs_image.write_bytes(bytes(64 * MIB))
    sh("mkfs.ext4", "-q", fs_image)
    device = sh("losetup", "--find", "--show", fs_image).strip()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        sh("mount", device, mountpoint)
        try:
            result = osbake("deploy", disk.raw, device)
            assert result.returncode == 2, result.stderr
            assert f"{device} is mounted at {mountpoint}" in result.stderr
            assert f"umount {mountpoint}" in result.stderr
            result = osbake("deploy", disk.raw, fs_image)
            assert result.returncode == 2
            assert f"attached as {device}" in result.stderr
        finally:
            sh("umount", mountpoint)
        # Still the filesystem it was (the kernel rewrites its superblock on umount, so
        # compare what deploy would have written: a partition table).
        with fs_image.open("rb") as handle:
            assert handle.read(1024)[512:520] != b"EFI PART"
        sh("e2fsck", "-fn", fs_image)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_the_disk_this_system_runs_from_is_refused(disk: SampleDisk) -> None:
    """Only the check runs here (nothing is opened for writing)."""
    host = Host()
    majmin = next(m.majmin for m in host.mounts() if m.mountpoint == "/")
    disks = host.system_disks()
    assert disks, f"the root filesystem ({majmin}) is on no block device this test can see"
    name = next(iter(disks))
    target = describe_target(Path(f"/dev/{name}"))
    with pytest.raises(UsageError, match="the disk this system runs from"):
        check_target(target, image=disk.raw, needed=1, host=host)


@pytest.mark.needs_root
def test_full_filesystem_leaves_no_half_written_file(tmp_path: Path, disk: SampleDisk) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    small = tmp_path / "small"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", small)
    try:
        result = osbake("deploy", disk.qcow2, small / "disk.img", "--size", "100M")
        assert result.returncode == 1
        assert "no space left on the filesystem that holds the target" in result.stderr
        assert list(small.iterdir()) == []
    finally:
        sh("umount", small)
