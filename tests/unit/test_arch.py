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
        (Arch.ARM64, {Firmware.UEFI, Firmware.UEFI_SECUREBOOT, Firmware.EXTLINUX}),
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


def test_consoles() -> None:
    assert Arch.AMD64.info.console == "ttyS0"
    assert Arch.I386.info.console == "ttyS0"
    assert Arch.PPC64EL.info.console == "hvc0"
    for info in ARCHITECTURES.values():
        # Where QEMU boots the arch, its serial port is the arch's console.
        if info.qemu is not None:
            assert info.qemu.console == info.console


@pytest.mark.parametrize(
    ("arch", "generic", "cloud"),
    [
        (Arch.AMD64, "amd64", "cloud-amd64"),
        (Arch.ARM64, "arm64", "cloud-arm64"),
        (Arch.I386, "686-pae", None),
        (Arch.ARMHF, "armmp", None),
    ],
)
def test_kernel_flavours(arch: Arch, generic: str, cloud: str | None) -> None:
    assert arch.info.kernel_flavour("generic") == generic
    assert arch.info.kernel_flavour("cloud") == cloud
    assert arch.info.kernel_flavour("linux-image-rt-amd64") is None


def test_kernel_packages() -> None:
    from osbake.distros.kernels import debian_package

    assert debian_package(Arch.AMD64, "cloud") == "linux-image-cloud-amd64"
    assert debian_package(Arch.AMD64, "server") == "linux-image-amd64"
    assert debian_package(Arch.I386, "generic") == "linux-image-686-pae"
    assert debian_package(Arch.I386, "cloud") is None
    assert debian_package(Arch.ARM64, "none") is None
    assert debian_package(Arch.ARM64, "linux-image-rt-arm64") == "linux-image-rt-arm64"


def test_grub_packages() -> None:
    assert Arch.AMD64.info.grub_package(Firmware.BIOS) == "grub-pc-bin"
    assert Arch.AMD64.info.grub_package(Firmware.UEFI) == "grub-efi-amd64-bin"
    assert Arch.I386.info.grub_package(Firmware.UEFI) == "grub-efi-ia32-bin"
    assert Arch.ARM64.info.grub_package(Firmware.BIOS) is None
    assert Arch.ARM64.info.secure_boot_packages() == ["shim-signed", "grub-efi-arm64-signed"]
    assert Arch.I386.info.secure_boot_packages() == []


def test_every_firmware_an_arch_has_has_its_grub() -> None:
    for info in ARCHITECTURES.values():
        for firmware in info.firmwares:
            if firmware == Firmware.EXTLINUX:  # U-Boot reads extlinux.conf: no GRUB
                assert info.grub_platform(firmware) is None
                assert info.grub_package(firmware) is None
                continue
            assert info.grub_platform(firmware) is not None
            assert info.grub_package(firmware) is not None
            if firmware.is_uefi:
                assert info.efi_loader.startswith("BOOT")


def test_script_environment() -> None:
    env = Arch.ARM64.info.environment()
    assert env == {"OSBAKE_ARCH": "arm64", "OSBAKE_CONSOLE": "ttyAMA0", "OSBAKE_ARCH_MICROCODE": ""}
    assert Arch.AMD64.info.environment()["OSBAKE_ARCH_MICROCODE"] == (
        "amd64-microcode intel-microcode"
    )


def test_boot_summary() -> None:
    assert Arch.AMD64.info.boot_summary() == "bios, uefi, uefi-secureboot"
    assert "no firmware" in Arch.S390X.info.boot_summary()


def test_user_mode_emulator_names_are_distinct_and_runs_lists_arches() -> None:
    names = [info.qemu_user for info in ARCHITECTURES.values()]
    assert len(set(names)) == len(names)
    assert Arch.ARM64.info.qemu_user == "aarch64" and Arch.ARMHF.info.qemu_user == "arm"
    for info in ARCHITECTURES.values():
        assert all(Arch(name) != Arch(info.debian) for name in info.runs)
