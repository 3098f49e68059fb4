"""Cloud and container names of architectures come from osbake.arch."""

from __future__ import annotations

import pytest

from osbake.arch import Arch
from osbake.outputs.oci import oci_platform
from osbake.publish.filters import parse_filter
from osbake.publish.streams import Item
from osbake.publish.targets.ec2 import boot_mode, ec2_arch
from osbake.publish.targets.glance import glance_arch


def item(arch: str) -> Item:
    return Item("c:daily:download", f"c:img:bookworm:{arch}", "1", "disk1.img", {"arch": arch})


@pytest.mark.parametrize(
    ("name", "glance", "ec2"),
    [
        ("amd64", "x86_64", "x86_64"),
        ("x86_64", "x86_64", "x86_64"),
        ("arm64", "aarch64", "arm64"),
        ("aarch64", "aarch64", "arm64"),
        ("i386", "i686", "i386"),
        ("armhf", "armv7l", "armhf"),  # EC2 has no 32-bit ARM: the name goes as it is
        ("ppc64el", "ppc64le", "ppc64el"),
        ("vax", "vax", "vax"),  # unknown: as the stream says
    ],
)
def test_cloud_arch_names(name: str, glance: str, ec2: str) -> None:
    assert glance_arch(name) == glance
    assert ec2_arch(name) == ec2


def test_ec2_boots_arches_without_a_bios_with_uefi() -> None:
    assert boot_mode(item("arm64")) == "uefi"
    assert boot_mode(item("aarch64")) == "uefi"
    assert boot_mode(item("amd64")) is None
    assert boot_mode(item("i386")) is None
    assert boot_mode(item("riscv64")) is None  # not an EC2 architecture


def test_oci_platforms() -> None:
    assert oci_platform(Arch.AMD64) == {"architecture": "amd64", "os": "linux"}
    assert oci_platform(Arch.I386) == {"architecture": "386", "os": "linux"}
    assert oci_platform(Arch.ARMHF) == {"architecture": "arm", "os": "linux", "variant": "v7"}
    assert oci_platform(Arch.ARM64) == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert oci_platform(Arch.PPC64EL)["architecture"] == "ppc64le"


def test_arch_filters_match_any_name_of_the_arch() -> None:
    assert parse_filter("arch=amd64").matches(item("amd64"))
    assert parse_filter("arch=x86_64").matches(item("amd64"))
    assert parse_filter("arch=amd64").matches(item("x86_64"))
    assert not parse_filter("arch=x86_64").matches(item("arm64"))
    assert parse_filter("arch!=x86_64").matches(item("arm64"))
    assert not parse_filter("arch!=x86_64").matches(item("amd64"))
    assert not parse_filter("arch=vax").matches(item("amd64"))
    # Other keys compare as written.
    assert not parse_filter("release=x86_64").matches(item("amd64"))


def test_glance_is_told_to_boot_uefi_only_images_with_uefi() -> None:
    from osbake.publish.targets.glance import image_properties

    def props(arch: str, **fields: str) -> dict[str, str]:
        data = {"content_id": "c", "product_name": "p", "version_name": "1", "item_name": "i"}
        return image_properties(
            Item("c:daily:download", "p", "1", "disk1.img", {"arch": arch, **data, **fields})
        )

    assert props("arm64")["hw_firmware_type"] == "uefi"  # arm64 has no BIOS
    assert props("arm64", boot="uefi")["architecture"] == "aarch64"
    assert props("amd64", boot="uefi,uefi-secureboot")["hw_firmware_type"] == "uefi"
    assert "hw_firmware_type" not in props("amd64", boot="bios,uefi")
    assert "hw_firmware_type" not in props("amd64")
    assert "hw_firmware_type" not in props("i386", boot="bios")
