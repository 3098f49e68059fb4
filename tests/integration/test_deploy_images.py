"""`osbake deploy` with the real tools: every image format, config partitions, grown roots,
files and block devices (loop devices over files, as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbake.deploy import deploy
from osbake.firstboot import make_seed
from tests.integration.deploy_disks import MIB, SampleDisk, make_disk, sh

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory) -> SampleDisk:
    return make_disk(tmp_path_factory.mktemp("gpt"))


@pytest.fixture(scope="module")
def mbr_disk(tmp_path_factory: pytest.TempPathFactory) -> SampleDisk:
    return make_disk(tmp_path_factory.mktemp("mbr"), table="dos")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("seeds")
    user_data = "#cloud-config\nruncmd:\n  - df -h / > /dev/ttyS0\n"
    return {
        fmt: make_seed(folder / f"{fmt}.img", format=fmt, user_data=user_data, hostname="node1")
        for fmt in ("configdrive", "nocloud-vfat", "nocloud-iso")
    }


def osbake(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def table(target: Path | str) -> dict:
    return json.loads(sh("sfdisk", "--json", target))["partitiontable"]


def e2fsck_clean(target: Path | str, offset: int) -> None:
    result = subprocess.run(
        ["e2fsck", "-fn", f"{target}?offset={offset}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def fs_bytes(target: Path | str, offset: int) -> int:
    out = sh("dumpe2fs", "-h", f"{target}?offset={offset}")
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def read_range(path: Path | str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


@pytest.mark.parametrize("kind", ["raw", "qcow2", "tar_xz"])
def test_each_format_writes_exactly_the_disk(
    tmp_path: Path, gpt_disk: SampleDisk, kind: str
) -> None:
    image = getattr(gpt_disk, kind)
    target = tmp_path / "target.img"
    target.write_bytes(b"\xee" * gpt_disk.size)  # stale data everywhere, same size as the image
    result = osbake("deploy", image, target, "--verify")
    assert result.returncode == 0, result.stderr
    assert "verified: the data read back from the target matches" in result.stdout
    assert "sha256 matches manifest disk.manifest.json" in result.stdout
    assert target.read_bytes() == gpt_disk.raw.read_bytes()
    # Zeros were not written: the result is as sparse as the image.
    assert os.stat(target).st_blocks * 512 < 8 * MIB


@pytest.mark.parametrize(
    "options",
    [
        ["-o", "compat=0.10"],
        ["-o", "extended_l2=on,cluster_size=128k"],
        ["-c", "-o", "cluster_size=4k"],
        ["-o", "cluster_size=2M"],
    ],
)
def test_qcow2_variants_read_like_qemu_does(
    tmp_path: Path, gpt_disk: SampleDisk, options: list[str]
) -> None:
    variant = tmp_path / "variant.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", *options, gpt_disk.raw, variant)
    # Zero clusters and a fresh write on top, as a used image has them.
    sh("qemu-io", "-f", "qcow2", "-c", "write -z 12M 1M", "-c", "write -P 0x5a 40M 12k", variant)
    target = tmp_path / "target.img"
    report = deploy(variant, target, size=gpt_disk.size, checksum=False, verify=True)
    assert report.verified
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "qcow2", "-F", "raw", variant, target],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


def check_grown_disk(target: Path | str, disk: SampleDisk, seed: Path, label: str, fs: str) -> dict:
    """The layout osbake promises after --seed/--configdrive and --grow."""
    assert read_range(target, 0, 440) == read_range(disk.raw, 0, 440)  # boot code kept
    verify = sh("sfdisk", "--verify", target)
    assert "No errors detected" in verify
    layout = table(target)
    total = (
        os.stat(target).st_size
        if Path(target).is_file()
        else int(sh("blockdev", "--getsize64", target))
    )
    parts = layout["partitions"]
    assert len(parts) == 3
    root, cfg = parts[1], parts[2]
    if layout["label"] == "gpt":
        assert layout["lastlba"] == total // 512 - 34  # the backup GPT is at the very end
        assert cfg["start"] + cfg["size"] - 1 == layout["lastlba"]
        assert cfg["name"] == ("config-2" if label.lower() == "config-2" else "cidata")
    else:
        assert cfg["start"] + cfg["size"] == total // 512
    assert cfg["start"] % 2048 == 0
    assert cfg["size"] * 512 <= 64 * MIB
    assert root["start"] + root["size"] == cfg["start"]  # the root took all the room left
    # The seed volume is in the partition, byte for byte, and blkid sees its label.
    start = cfg["start"] * 512
    assert read_range(target, start, seed.stat().st_size) == seed.read_bytes()
    probe = sh("blkid", "-p", "-o", "export", "-O", str(start), target)
    assert f"LABEL={label}" in probe.splitlines()
    assert f"TYPE={fs}" in probe.splitlines()
    # The root filesystem fills its partition, is clean, and still holds its files.
    offset = root["start"] * 512
    e2fsck_clean(target, offset)
    assert root["size"] * 512 - fs_bytes(target, offset) < 4096
    hostname = sh("debugfs", "-R", "cat /etc/hostname", f"{target}?offset={offset}")
    assert hostname == "test-disk\n"
    return layout


def test_config_drive_and_grow_on_a_disk_file(
    tmp_path: Path, gpt_disk: SampleDisk, seeds: dict[str, Path]
) -> None:
    target = tmp_path / "disk8.img"
    result = osbake(
        "deploy",
        gpt_disk.qcow2,
        target,
        "--size",
        "200M",
        "--configdrive",
        seeds["configdrive"],
        "--grow",
        "--verify",
    )
    assert result.returncode == 0, result.stderr
    assert "seed:     partition 3 (config-2, iso9660" in result.stdout
    assert "ext4 grown" in result.stdout
    check_grown_disk(target, gpt_disk, seeds["configdrive"], "config-2", "iso9660")


def test_ironic_encoded_config_drive(tmp_path: Path, gpt_disk: SampleDisk, seeds) -> None:
    encoded = tmp_path / "configdrive.b64"
    sh("sh", "-c", f"gzip -c {seeds['configdrive']} | base64 -w0 > {encoded}")
    target = tmp_path / "disk.img"
    report = deploy(gpt_disk.raw, target, size=120 * MIB, configdrive=encoded)
    assert report.seed is not None
    assert report.seed.label == "config-2"
    start = report.seed.start
    assert read_range(target, start, 64 * 1024) == seeds["configdrive"].read_bytes()[: 64 * 1024]


def test_nocloud_seed_on_an_mbr_disk(tmp_path: Path, mbr_disk: SampleDisk, seeds) -> None:
    target = tmp_path / "disk.img"
    report = deploy(
        mbr_disk.tar_xz, target, size=160 * MIB, seed=seeds["nocloud-vfat"], grow=True, verify=True
    )
    assert report.table == "dos"
    assert not report.gpt_relocated
    layout = check_grown_disk(target, mbr_disk, seeds["nocloud-vfat"], "CIDATA", "vfat")
    assert layout["label"] == "dos"


def test_a_nocloud_seed_is_refused_as_a_config_drive(tmp_path: Path, gpt_disk, seeds) -> None:
    target = tmp_path / "disk.img"
    target.write_bytes(b"keep")
    result = osbake("deploy", gpt_disk.raw, target, "--configdrive", seeds["nocloud-iso"])
    assert result.returncode == 2
    assert "is a NoCloud seed (label cidata), not a config drive" in result.stderr
    assert target.read_bytes() == b"keep"


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to attach loop devices (CI runs as root)")
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\xee" * (200 * MIB))  # an old disk: stale bytes everywhere
    device = sh("losetup", "--find", "--show", backing).strip()
    try:
        yield device, backing
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


@pytest.mark.needs_root
def test_block_device_with_config_drive_and_grow(
    loop_device: tuple[str, Path], gpt_disk: SampleDisk, seeds
) -> None:
    device, _backing = loop_device
    report = deploy(
        gpt_disk.tar_xz, Path(device), configdrive=seeds["configdrive"], grow=True, verify=True
    )
    assert report.target_kind == "block device"
    assert report.verified
    assert report.grown is not None
    assert report.grown.filesystem_grown
    check_grown_disk(device, gpt_disk, seeds["configdrive"], "config-2", "iso9660")
    # What was zero in the image is zero on the disk, whatever the disk held before.
    esp_end = (2048 + 16384) * 512
    on_disk = read_range(device, 34 * 512, esp_end - 34 * 512)
    assert on_disk == read_range(gpt_disk.raw, 34 * 512, esp_end - 34 * 512)


@pytest.mark.needs_root
def test_block_device_of_the_image_size(tmp_path: Path, gpt_disk: SampleDisk) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to attach loop devices (CI runs as root)")
    backing = tmp_path / "exact.img"
    backing.write_bytes(b"\xee" * gpt_disk.size)
    device = sh("losetup", "--find", "--show", backing).strip()
    try:
        result = osbake("deploy", gpt_disk.qcow2, device, "--verify")
        assert result.returncode == 0, result.stderr
        assert read_range(device, 0, gpt_disk.size) == gpt_disk.raw.read_bytes()
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
