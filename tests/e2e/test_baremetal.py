"""First boot for real, under QEMU (TCG): seeds, deploy to a bigger disk, bare metal, kernels.

Each boot runs a first-boot script from the seed's user-data (tests/conftest.py's
`first_boot_inputs`) that prints what cloud-init did (host name, user, key, root size,
datasource, kernel) to the serial console as `E2E-NAME=value` lines; the test reads
them from the console log.
Boots (about 100 s each under TCG): NoCloud, ConfigDrive, the deployed 8 GiB disk,
and the bare-metal image (server kernel) deployed with a NoCloud partition.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osbake.manifest import file_sha256
from tests.conftest import (
    FAILED_MODULE,
    FIRST_BOOT_USER,
    ImageBuilds,
    check_provisioned,
    first_boot_values,
)

pytestmark = pytest.mark.e2e

GIB = 1 << 30


@pytest.fixture(scope="module")
def cloud(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml")


@pytest.fixture(scope="module")
def inputs(first_boot_inputs: Path) -> Path:
    return first_boot_inputs


def osbake(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def seed(inputs: Path, out: Path, fmt: str, hostname: str) -> Path:
    result = osbake(
        "seed",
        "-o",
        out,
        "--format",
        fmt,
        "--user-data",
        inputs / "user-data",
        "--hostname",
        hostname,
        "--ssh-key",
        inputs / "key.pub",
        "--user",
        FIRST_BOOT_USER,
    )
    assert result.returncode == 0, result.stderr
    return out


def boot(image: Path, log: Path, *extra: str, first: str | None = None) -> dict[str, str]:
    """Boot to the end of the report; return its values (and check cloud-init's modules)."""
    expect = ["--expect", first] if first else []
    result = osbake(
        "boot",
        image,
        "--accel",
        "tcg",
        "--timeout",
        "600",
        *expect,
        "--expect",
        "E2E-DONE",
        "--fail-on",
        "Kernel panic",
        "--console-log",
        log,
        *extra,
    )
    console = log.read_text(errors="replace")
    assert result.returncode == 0, result.stderr[-3000:] + console[-3000:]
    assert not FAILED_MODULE.search(console), FAILED_MODULE.search(console)
    return first_boot_values(console)


def test_nocloud_seed(cloud: Path, inputs: Path, tmp_path: Path) -> None:
    image = cloud / "debian-cloud.qcow2"
    volume = seed(inputs, tmp_path / "seed.iso", "nocloud-iso", "web1")
    values = boot(image, tmp_path / "console.log", "--seed", volume)
    check_provisioned(values, inputs, "web1")
    assert values["DS"].startswith("DataSourceNoCloud")


def test_configdrive_seed_on_a_cdrom(cloud: Path, inputs: Path, tmp_path: Path) -> None:
    image = cloud / "debian-cloud.qcow2"
    volume = seed(inputs, tmp_path / "configdrive.iso", "configdrive", "node2")
    values = boot(image, tmp_path / "console.log", "--seed", volume, "--seed-bus", "cdrom")
    check_provisioned(values, inputs, "node2")
    assert values["DS"].startswith("DataSourceConfigDrive")


def test_deployed_disk_reads_its_config_drive_and_grows(
    cloud: Path, inputs: Path, tmp_path: Path
) -> None:
    """No --grow: the image's growroot unit grows the root at first boot."""
    volume = seed(inputs, tmp_path / "configdrive.iso", "configdrive", "node7")
    disk = tmp_path / "disk.img"
    result = osbake(
        "deploy", cloud / "debian-cloud.qcow2", disk, "--size", "8G", "--configdrive", volume
    )
    assert result.returncode == 0, result.stderr
    assert disk.stat().st_size == 8 * GIB
    values = boot(disk, tmp_path / "console.log")
    check_provisioned(values, inputs, "node7")
    assert values["DS"].startswith("DataSourceConfigDrive")
    root = int(values["ROOT"])
    assert 7.5 * GIB < root < 8 * GIB, root  # the whole disk but the ESP and the drive
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert re.search(r"growroot: grew partition 3 of /dev/vda", console)


def damaged_copy(cloud: Path, folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(cloud / "debian-cloud.manifest.json", folder)
    shutil.copy(cloud / "debian-cloud.qcow2", folder)
    return folder / "debian-cloud.qcow2"


def test_deploy_refuses_damaged_images_and_small_disks(cloud: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.img"
    with target.open("wb") as handle:
        handle.truncate(4 * GIB)
        handle.seek(0)
        handle.write(b"precious " * 1000)
    before = file_sha256(target)

    truncated = damaged_copy(cloud, tmp_path / "truncated")
    os.truncate(truncated, truncated.stat().st_size - 4096)
    result = osbake("deploy", truncated, target)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "truncated" in result.stderr and "the target was not touched" in result.stderr

    corrupt = damaged_copy(cloud, tmp_path / "corrupt")
    with corrupt.open("r+b") as handle:
        handle.seek(corrupt.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = osbake("deploy", corrupt, target)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not match its checksum" in result.stderr

    small = tmp_path / "small.img"
    with small.open("wb") as handle:
        handle.truncate(512 << 20)
    result = osbake("deploy", cloud / "debian-cloud.qcow2", small)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "too small" in result.stderr
    assert small.stat().st_size == 512 << 20
    with small.open("rb") as handle:
        assert not handle.read(1 << 20).strip(b"\0")  # nothing was written

    assert file_sha256(target) == before


@pytest.fixture(scope="module")
def generic(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml", variant="generic")


@pytest.fixture(scope="module")
def baremetal(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml", variant="baremetal")


def kernel(folder: Path, image: str) -> dict[str, object]:
    manifest = json.loads((folder / f"{image}.manifest.json").read_text())
    assert manifest["kernel"], f"{image}: the manifest has no kernel footprint"
    return dict(manifest["kernel"])


def test_manifests_compare_cloud_generic_and_server_kernels(
    cloud: Path, generic: Path, baremetal: Path
) -> None:
    cloud_k = kernel(cloud, "debian-cloud")
    generic_k = kernel(generic, "debian-cloud-generic")
    server_k = kernel(baremetal, "debian-cloud-baremetal")  # kernel: server
    assert (cloud_k["flavour"], generic_k["flavour"], server_k["flavour"]) == (
        "cloud",
        "generic",
        "server",
    )
    assert str(cloud_k["package"]).endswith("-cloud-amd64")
    # The server kernel is the generic one: same package, same version.
    assert generic_k["package"] == server_k["package"]
    assert generic_k["version"] == server_k["version"]
    for entry in (cloud_k, generic_k, server_k):
        assert entry["total"] == entry["vmlinuz"] + entry["modules"] + entry["initrd"]
        assert all(int(entry[k]) > 0 for k in ("vmlinuz", "modules", "initrd"))  # type: ignore[call-overload]
    assert int(server_k["total"]) < 0.5 * int(generic_k["total"])  # type: ignore[call-overload]
    # Its initramfs holds storage, root file systems and keyboards, not every network card.
    assert int(server_k["initrd"]) < 0.6 * int(generic_k["initrd"])  # type: ignore[call-overload]
    trim = server_k["trim"]
    assert isinstance(trim, dict) and trim["compress"] == "xz"
    assert {"sound", "wireless", "bluetooth", "media", "infiniband"} <= set(trim["families"])
    assert "trim" not in generic_k
    # Issue 16's target (docs/benchmarks.md, "Server kernel footprint"): at most 60 MB.
    assert int(server_k["total"]) <= 60_000_000, server_k  # type: ignore[call-overload]


def test_baremetal_image_deployed_with_a_nocloud_partition_boots(
    baremetal: Path, inputs: Path, tmp_path: Path
) -> None:
    """raw.tar.xz onto a 4 GiB disk, a vfat NoCloud seed as its last partition, Secure Boot."""
    volume = seed(inputs, tmp_path / "seed.img", "nocloud-vfat", "metal1")
    disk = tmp_path / "disk.img"
    result = osbake(
        "deploy",
        baremetal / "debian-cloud-baremetal.raw.tar.xz",
        disk,
        "--size",
        "4G",
        "--seed",
        volume,
    )
    assert result.returncode == 0, result.stderr
    # Secure Boot: the kernel's lockdown checks the signature of every compressed module
    # (kmod unpacks the .ko.xz; the signature inside it is the one Debian made).
    values = boot(
        disk,
        tmp_path / "console.log",
        "--firmware",
        "uefi-secureboot",
        first="Secure boot enabled",
    )
    check_provisioned(values, inputs, "metal1")
    # ConfigDrive is first in the bare-metal list; with none there, NoCloud's partition.
    assert values["DS"].startswith("DataSourceNoCloud")
    assert "console=tty0 console=ttyS0,115200" in values["CMDLINE"]
    total, compressed = (int(n) for n in values["MODULES"].split())
    assert total == compressed > 1000  # the server kernel: every module xz-compressed
    assert values["SOUND"] == "no"
    assert "virtio_net" in values["LOADED"].split()  # modules load (from .ko.xz)
    assert int(values["ROOT"]) > 3 * GIB  # growroot grew it up to the seed partition
