"""The cloud image, in each disk format, booted as its platform presents it and given its
instance by each datasource, as on a cloud.

`osbake boot --hardware target --datasource D` boots a .vmdk on VMware's devices
(vmxnet3, pvscsi), a .vhd/.vhdx on Hyper-V's (IDE, the legacy NIC, which Debian's cloud
kernel has no driver for), a .qcow2 or .raw on virtio; an ec2 or openstack datasource
is a metadata service at 169.254.169.254 that cloud-init must pick by the SMBIOS
strings (ds-identify), a nocloud or configdrive one a seed. Each boot must finish
cloud-init with that datasource, no module failing, the host name, user and key it
was given; on a machine without a usable NIC it must not wait for the network.

One boot per format and per datasource, the firmwares alternating; the other
combinations are marked `slow` (`make test-slow`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    FAILED_MODULE,
    FIRST_BOOT_USER,
    ImageBuilds,
    check_provisioned,
    first_boot_values,
)

pytestmark = pytest.mark.e2e

DONE = r"Cloud-init v\. \S+ finished at .* Datasource DataSource(\w+)"
WAIT_FAILED = re.compile(r"FAILED.*Wait for Network")
NO_NIC = "osbake: no ethernet interface"
DATASOURCES = {
    "ec2": "Ec2",
    "openstack": "OpenStack",
    "nocloud": "NoCloud",
    "configdrive": "ConfigDrive",
}
# The platform's devices, as the report names them, and the root's device in the guest.
PLATFORMS = {
    "kvm": ({"nic": "virtio", "disk_bus": "virtio"}, "/dev/vda"),
    "vmware": ({"nic": "vmxnet3", "disk_bus": "pvscsi"}, "/dev/sda"),
    "hyperv": ({"nic": "tulip", "disk_bus": "ide"}, "/dev/sda"),
}
FORMATS = ["vmdk", "vhd", "vhdx"]  # besides the recipe's own qcow2 and raw.tar.xz


@pytest.fixture(scope="module")
def cloud(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml")


@pytest.fixture(scope="module")
def formats(image_builds: ImageBuilds, cloud: Path) -> Path:
    # The same tree and disk (from the step cache), written as the hypervisors' formats.
    return image_builds.build("debian-cloud.yaml", outputs=FORMATS)


@pytest.mark.parametrize(
    ("artifact", "platform", "firmware", "datasource"),
    [
        pytest.param("qcow2", "kvm", "uefi", "ec2", id="qcow2-kvm-uefi-ec2"),
        # vmdk boots with BIOS: Debian's OVMF has no pvscsi driver.
        pytest.param("vmdk", "vmware", "bios", "openstack", id="vmdk-vmware-bios-openstack"),
        pytest.param("vhd", "hyperv", "uefi", "nocloud", id="vhd-hyperv-uefi-nocloud"),
        pytest.param("vhdx", "hyperv", "bios", "configdrive", id="vhdx-hyperv-bios-configdrive"),
        pytest.param(
            "raw.tar.xz", "kvm", "uefi", "openstack",
            id="rawtarxz-kvm-uefi-openstack", marks=pytest.mark.slow,
        ),
        pytest.param(
            "qcow2", "kvm", "bios", "nocloud", id="qcow2-kvm-bios-nocloud", marks=pytest.mark.slow
        ),
        pytest.param(
            "vmdk", "vmware", "bios", "ec2", id="vmdk-vmware-bios-ec2", marks=pytest.mark.slow
        ),
        pytest.param(
            "qcow2", "kvm", "uefi", "configdrive",
            id="qcow2-kvm-uefi-configdrive", marks=pytest.mark.slow,
        ),
    ],
)  # fmt: skip
def test_boots_on_its_platform_with_each_datasource(
    request: pytest.FixtureRequest,
    cloud: Path,
    first_boot_inputs: Path,
    tmp_path: Path,
    artifact: str,
    platform: str,
    firmware: str,
    datasource: str,
) -> None:
    folder = cloud if artifact in ("qcow2", "raw.tar.xz") else request.getfixturevalue("formats")
    devices, root_disk = PLATFORMS[platform]
    first_boot(
        request.node.callspec.id,
        folder / f"debian-cloud.{artifact}",
        ["--hardware", "target", "--firmware", firmware],
        datasource,
        first_boot_inputs,
        tmp_path,
        devices=devices,
        root_disk=root_disk,
        network=platform != "hyperv",
    )


@pytest.mark.slow
def test_the_generic_kernel_on_qemus_default_devices(
    image_builds: ImageBuilds, first_boot_inputs: Path, tmp_path: Path
) -> None:
    # The cloud kernel has neither e1000 nor AHCI; Debian's generic kernel has both.
    generic = image_builds.build("debian-cloud.yaml", variant="generic")
    first_boot(
        "generic-e1000-sata-bios-nocloud",
        generic / "debian-cloud-generic.qcow2",
        ["--nic", "e1000", "--disk-bus", "sata"],
        "nocloud",
        first_boot_inputs,
        tmp_path,
        devices={"nic": "e1000", "disk_bus": "sata"},
        root_disk="/dev/sda",
        network=True,
    )


def first_boot(
    name: str,
    image: Path,
    options: list[str],
    datasource: str,
    inputs: Path,
    tmp_path: Path,
    *,
    devices: dict[str, str],
    root_disk: str,
    network: bool,
) -> None:
    """Boot `image` with `options` and `datasource` to the end of cloud-init, and check
    the devices, the instance it was given, and the network (`network`: the kernel has
    the NIC's driver, else the boot must not have waited for one)."""
    hostname = f"e2e-{datasource}"
    log = tmp_path / "console.log"
    argv = [
        sys.executable, "-m", "osbake", "boot", str(image), *options, "--accel", "tcg",
        "--timeout", "600", "--fail-on", "Kernel panic", "--datasource", datasource,
        "--hostname", hostname, "--user", FIRST_BOOT_USER,
        "--ssh-key", str(inputs / "key.pub"), "--user-data", str(inputs / "user-data"),
        "--expect", "E2E-DONE", "--expect", DONE, "--console-log", str(log), "--json",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    console = log.read_text(errors="replace")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + console[-3000:]
    print(f"{name}: cloud-init done, {seconds:.0f} s from osbake boot's start")

    # Booted on the devices asked for.
    report = json.loads(result.stdout.splitlines()[-1])
    assert {key: report[key] for key in devices} == devices
    values = first_boot_values(console)
    assert values["ROOTDEV"].startswith(root_disk), values["ROOTDEV"]

    # Given its instance by the datasource, with nothing failing.
    finished = re.search(DONE, console)
    assert finished is not None
    assert finished.group(1).startswith(DATASOURCES[datasource]), finished.group(0)
    check_provisioned(values, inputs, hostname)
    assert not FAILED_MODULE.search(console), FAILED_MODULE.search(console)

    # The network came up where the kernel has the NIC's driver; where it has none
    # (the cloud kernel on Hyper-V's legacy NIC) the boot did not wait for one.
    assert not WAIT_FAILED.search(console), WAIT_FAILED.search(console)
    if network:
        assert NO_NIC not in console
        # (QEMU's DHCP: 10.0.2.15, or 169.254.2.15 on a metadata service's network)
        assert re.search(r"\.2\.15/\d+", values["ADDRESSES"]), values["ADDRESSES"]
    else:
        assert NO_NIC in console
        assert values["ADDRESSES"] == ""

    # A metadata service stopped with the boot: nothing of it is left running.
    leftovers = subprocess.run(
        ["pgrep", "-f", "osbake-metadata-"], capture_output=True, check=False
    )
    assert leftovers.returncode == 1, leftovers.stdout
