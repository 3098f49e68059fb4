"""The architecture model: one entry per architecture, every fact consistent."""

from __future__ import annotations

import uuid

import pytest

from osbake.arch import ARCHITECTURES, Arch, Firmware, from_any


def test_every_arch_has_an_entry() -> None:
    assert set(ARCHITECTURES) == set(Arch)
    for arch in Arch:
        assert arch.info.debian == str(arch)


def test_gpt_type_ids_are_uuids_and_distinct() -> None:
    roots = [info.gpt_root for info in ARCHITECTURES.values()]
    assert len(set(roots)) == len(roots)
    for value in roots + [i.gpt_usr for i in ARCHITECTURES.values() if i.gpt_usr]:
        assert str(uuid.UUID(value)).upper() == value


@pytest.mark.parametrize(
    ("arch", "firmwares"),
    [
        (Arch.AMD64, {Firmware.BIOS, Firmware.UEFI, Firmware.UEFI_SECUREBOOT}),
        (Arch.ARM64, {Firmware.UEFI, Firmware.UEFI_SECUREBOOT}),
        (Arch.I386, {Firmware.BIOS, Firmware.UEFI}),
    ],
)
def test_boot_modes(arch: Arch, firmwares: set[Firmware]) -> None:
    assert set(arch.info.firmwares) == firmwares


def test_names() -> None:
    assert Arch.AMD64.info.efi_loader == "BOOTX64.EFI"
    assert Arch.ARM64.info.efi_loader == "BOOTAA64.EFI"
    assert Arch.I386.info.efi_loader == "BOOTIA32.EFI"
    assert Arch.ARM64.info.console == "ttyAMA0"
    assert Arch.I386.info.grub_platform(Firmware.BIOS) == "i386-pc"
    assert Arch.ARM64.info.grub_platform(Firmware.BIOS) is None
    with pytest.raises(ValueError, match="no UEFI"):
        _ = Arch.S390X.info.efi_loader


@pytest.mark.parametrize("name", ["amd64", "x86_64", "aarch64", "arm64", "i686", "386"])
def test_from_any_name(name: str) -> None:
    assert from_any(name) is not None


def test_from_an_unknown_name() -> None:
    assert from_any("vax") is None
