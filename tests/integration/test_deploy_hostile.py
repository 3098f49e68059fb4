"""Hostile and mistaken deploy inputs, through the real command: each one is refused with
a clear message and exit code 2, the target keeps its bytes, and nothing is left behind
(no partial file beside the target, no temporary folder)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.deploy_disks import MIB, SampleDisk, make_disk, sh

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> SampleDisk:
    return make_disk(tmp_path_factory.mktemp("disk"))


def osbake(*args: str | Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )


def with_sha(path: Path) -> list[str]:
    return ["--sha256", hashlib.sha256(path.read_bytes()).hexdigest()]


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# Each case: (what it makes in the folder) -> the deploy arguments, the message expected.
Case = Callable[[Path, SampleDisk, Path], tuple[list[str | Path], str]]


def text_file(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    image = folder / "notes.raw"
    image.write_text("not a disk\n" * 100_000)
    return [image, target, *with_sha(image)], "does not look like a disk image"


def bare_filesystem(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    image = folder / "fs.img"
    sh("truncate", "-s", "8M", image)
    sh("mkfs.vfat", image)  # a FAT boot sector ends in 55 AA like an MBR
    return [image, target, *with_sha(image)], "has no partition table"


def ext4_filesystem(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    image = folder / "root.ext4"
    sh("truncate", "-s", "8M", image)
    sh("mkfs.ext4", "-q", image)
    return [image, target, *with_sha(image)], "does not look like a disk image"


def tar_of_a_text(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    (folder / "disk.raw").write_text("hello\n" * 1000)
    image = folder / "fake.raw.tar.xz"
    sh("tar", "-C", folder, "-cJf", image, "disk.raw")
    return [image, target, *with_sha(image)], "the disk in the archive has no partition table"


def protective_mbr_only(
    folder: Path, disk: SampleDisk, target: Path
) -> tuple[list[str | Path], str]:
    image = folder / "half.raw"
    data = bytearray(disk.raw.read_bytes()[: 4 * MIB])
    data[512:1024] = bytes(512)  # the GPT header is gone, its protective MBR stays
    image.write_bytes(bytes(data))
    return [image, target, *with_sha(image)], "does not look like a disk image"


def vmdk_image(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    image = folder / "disk.vmdk"
    sh("qemu-img", "convert", "-O", "vmdk", disk.raw, image)
    return [image, target, *with_sha(image)], "is a vmdk image"


def huge_size(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    return [disk.qcow2, folder / "new.img", "--size", "9999999T"], "more than osbake creates"


def odd_size(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    return [disk.qcow2, folder / "new.img", "--size", "1000"], "multiple of 512"


def target_is_a_directory(
    folder: Path, disk: SampleDisk, target: Path
) -> tuple[list[str | Path], str]:
    (folder / "adir").mkdir()
    return [disk.qcow2, folder / "adir"], "neither a block device nor a regular file"


def target_is_a_char_device(
    folder: Path, disk: SampleDisk, target: Path
) -> tuple[list[str | Path], str]:
    return [disk.qcow2, "/dev/null"], "neither a block device nor a regular file"


def target_is_a_fifo(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    os.mkfifo(folder / "pipe")
    return [disk.qcow2, folder / "pipe"], "neither a block device nor a regular file"


def target_is_the_manifest(
    folder: Path, disk: SampleDisk, target: Path
) -> tuple[list[str | Path], str]:
    return [disk.qcow2, disk.manifest], "which this deploy reads"


def target_is_the_seed(
    folder: Path, disk: SampleDisk, target: Path
) -> tuple[list[str | Path], str]:
    seed = folder / "seed.iso"
    subprocess.run(
        [sys.executable, "-m", "osbake", "seed", "-o", str(seed)], check=True, capture_output=True
    )
    seed.write_bytes(seed.read_bytes() + bytes(64 * MIB - seed.stat().st_size))
    return [disk.qcow2, seed, "--seed", seed], "which this deploy reads"


def image_is_a_fifo(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    os.mkfifo(folder / "image.raw")
    return [folder / "image.raw", target, "--no-checksum"], "is not a file"


def gzip_bomb_configdrive(
    folder: Path, disk: SampleDisk, target: Path
) -> tuple[list[str | Path], str]:
    bomb = folder / "drive.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as handle:
        zeros = bytes(MIB)
        for _ in range(200):  # 200 MiB inflated, 200 KiB on disk
            handle.write(zeros)
    return [disk.qcow2, target, "--configdrive", bomb], "more than 64 MiB"


def base64_bomb_configdrive(
    folder: Path, disk: SampleDisk, target: Path
) -> tuple[list[str | Path], str]:
    bomb = folder / "drive.b64"
    bomb.write_bytes(base64.b64encode(gzip.compress(bytes(100 * MIB), compresslevel=9)))
    return [disk.qcow2, target, "--configdrive", bomb], "more than 64 MiB"


def bad_sha(folder: Path, disk: SampleDisk, target: Path) -> tuple[list[str | Path], str]:
    return [disk.raw, target, "--sha256", "../../etc/passwd"], "is not a sha256"


CASES = [
    text_file,
    bare_filesystem,
    ext4_filesystem,
    tar_of_a_text,
    protective_mbr_only,
    vmdk_image,
    huge_size,
    odd_size,
    target_is_a_directory,
    target_is_a_char_device,
    target_is_a_fifo,
    target_is_the_manifest,
    target_is_the_seed,
    image_is_a_fifo,
    gzip_bomb_configdrive,
    base64_bomb_configdrive,
    bad_sha,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_input_is_refused_and_leaves_nothing(
    case: Case, disk: SampleDisk, tmp_path: Path
) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    target = folder / "target.img"
    target.write_bytes(b"precious " * (80 * MIB // 9))
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    args, message = case(folder, disk, target)
    files_before = listing(folder)
    manifest_before = disk.manifest.read_bytes()
    result = osbake("deploy", *args, tmpdir=tmpdir)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    assert listing(folder) == files_before, "something was left beside the target"
    assert list(tmpdir.iterdir()) == [], "a temporary folder was left behind"
    assert disk.manifest.read_bytes() == manifest_before


def test_raw_writes_what_is_not_a_disk_image(tmp_path: Path) -> None:
    image = tmp_path / "fs.img"
    sh("truncate", "-s", "8M", image)
    sh("mkfs.ext4", "-q", image)
    target = tmp_path / "target.img"
    result = osbake(
        "deploy", image, target, "--size", "16M", "--raw", *with_sha(image), tmpdir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes()[: 8 * MIB] == image.read_bytes()


def test_a_fixed_vhd_is_written_without_its_footer(disk: SampleDisk, tmp_path: Path) -> None:
    vhd = tmp_path / "disk.vhd"
    sh("qemu-img", "convert", "-O", "vpc", "-o", "subformat=fixed,force_size=on", disk.raw, vhd)
    assert vhd.stat().st_size == disk.size + 512
    target = tmp_path / "target.img"
    result = osbake(
        "deploy", vhd, target, "--size", str(disk.size), *with_sha(vhd), tmpdir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (
        hashlib.sha256(target.read_bytes()).hexdigest()
        == hashlib.sha256(disk.raw.read_bytes()).hexdigest()
    )


def test_two_deploys_into_one_new_file(disk: SampleDisk, tmp_path: Path) -> None:
    """The second deploy into a file another deploy is writing stops at once and says so;
    the first one's file is complete."""
    from osbake.deploy.target import Target, lock_target

    target = tmp_path / "new.img"
    partial = tmp_path / ".new.img.osbake-partial"
    held = lock_target(Target(target, False, disk.size, created=True), partial)
    try:
        result = osbake("deploy", disk.qcow2, target, "--size", "64M", tmpdir=tmp_path)
    finally:
        os.close(held)
    assert result.returncode == 1, result.stderr
    assert "another osbake deploy is writing" in result.stderr
    assert partial.exists() and not target.exists()  # the other deploy's file was not touched
