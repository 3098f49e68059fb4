"""The QEMU firmware table: which firmware files boot which architecture under QEMU.

The architecture's own facts (QEMU binary, machine type, TCG CPU, serial console)
are in osbake.arch; this table adds, per architecture and firmware, the UEFI code
and variable store a distribution's package installs for QEMU, and what Secure
Boot needs of the machine. A BIOS is built into QEMU (SeaBIOS), so it needs no
files; an architecture or firmware missing here does not boot under osbake's QEMU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from osbake.arch import Arch, Firmware
from osbake.errors import HostError, UsageError

# `osbake boot` boots PC images unless told otherwise; the KVM probe is a PC boot sector.
DEFAULT_ARCH = Arch.AMD64


@dataclass(frozen=True)
class FirmwareFiles:
    code: Path
    vars_template: Path
    secure_boot: bool
    smm: bool = False  # the code is an SMM build: QEMU must emulate SMM and secure flash


@dataclass(frozen=True)
class QemuFirmware:
    """The firmwares of one architecture under QEMU."""

    bios: bool  # QEMU's built-in SeaBIOS boots it
    directory: Path  # where the package puts the UEFI files
    directory_env: str  # the environment variable that points osbake elsewhere
    package: str  # the Debian package that installs them
    # firmware -> (code, variable store template), file names inside `directory`
    uefi: dict[Firmware, tuple[str, str]] = field(default_factory=dict)
    # The firmwares whose code is an SMM build (every Secure Boot build is one), and
    # what such code needs of the machine: -machine options and further arguments.
    smm: frozenset[Firmware] = frozenset({Firmware.UEFI_SECUREBOOT})
    # U-Boot for the machine (-bios), which boots extlinux.conf, and its package.
    uboot: Path | None = None
    uboot_package: str = "u-boot-qemu"
    secure_machine: tuple[str, ...] = ()
    secure_args: tuple[str, ...] = ()


QEMU_FIRMWARE: dict[Arch, QemuFirmware] = {
    # Debian 12's ovmf package (see /usr/share/doc/ovmf/README.Debian): the 4 MiB builds.
    # The .secboot code needs SMM; the .ms variable store has Debian's PK, Microsoft's
    # KEK and db keys enrolled and Secure Boot switched on.
    Arch.AMD64: QemuFirmware(
        bios=True,
        directory=Path("/usr/share/OVMF"),
        directory_env="OSBAKE_OVMF_DIR",
        package="ovmf",
        uefi={
            Firmware.UEFI: ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            Firmware.UEFI_SECUREBOOT: ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
        },
        secure_machine=("smm=on",),
        secure_args=("-global", "driver=cfi.pflash01,property=secure,value=on"),
    ),
    # qemu-system-i386 boots i386 PCs with SeaBIOS, and with Debian 12's ovmf-ia32:
    # its only code is the Secure Boot build (so the machine needs SMM), and its
    # variable store has no keys enrolled, so Secure Boot stays off (Debian has no
    # signed shim for ia32 either).
    Arch.I386: QemuFirmware(
        bios=True,
        directory=Path("/usr/share/OVMF"),
        directory_env="OSBAKE_OVMF_DIR",
        package="ovmf-ia32",
        uefi={Firmware.UEFI: ("OVMF32_CODE_4M.secboot.fd", "OVMF32_VARS_4M.fd")},
        smm=frozenset({Firmware.UEFI}),
        secure_machine=("smm=on",),
        secure_args=("-global", "driver=cfi.pflash01,property=secure,value=on"),
    ),
    # Debian 12's qemu-efi-aarch64 package: the 64 MiB flash images of the virt machine.
    Arch.ARM64: QemuFirmware(
        bios=False,
        directory=Path("/usr/share/AAVMF"),
        directory_env="OSBAKE_AAVMF_DIR",
        package="qemu-efi-aarch64",
        uefi={Firmware.UEFI: ("AAVMF_CODE.fd", "AAVMF_VARS.fd")},
        # Debian 12's u-boot-qemu: U-Boot for the virt machine, with distro boot and virtio.
        uboot=Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin"),
    ),
}

FIRMWARE_HELP = (
    "bios (SeaBIOS), uefi (OVMF, AAVMF on arm64), uefi-secureboot (OVMF, keys enrolled) "
    "or extlinux (U-Boot, arm64)"
)


def qemu_firmware(arch: Arch) -> QemuFirmware:
    table = QEMU_FIRMWARE.get(arch)
    if table is None or arch.info.qemu is None:
        bootable = ", ".join(str(a) for a in QEMU_FIRMWARE)
        raise UsageError(
            f"osbake cannot boot {arch} images under QEMU",
            hint=f"osbake boots {bootable} images",
        )
    return table


def firmware_files(firmware: Firmware, arch: Arch = DEFAULT_ARCH) -> FirmwareFiles | None:
    """The UEFI code and variable template of a firmware (None for a BIOS)."""
    table = qemu_firmware(arch)
    firmware = Firmware(firmware)
    if firmware == Firmware.BIOS and table.bios:
        return None
    if firmware == Firmware.EXTLINUX and table.uboot is not None:
        return None  # U-Boot is the machine's -bios (uboot_image)
    names = table.uefi.get(firmware)
    if names is None:
        can = (["bios"] if table.bios else []) + [str(f) for f in table.uefi]
        raise UsageError(
            f"osbake cannot boot {arch} images with {firmware} under QEMU",
            hint=f"boot {arch} images with {' or '.join(can)}",
        )
    base = Path(os.environ.get(table.directory_env, str(table.directory)))
    code, variables = names
    return FirmwareFiles(
        base / code,
        base / variables,
        firmware == Firmware.UEFI_SECUREBOOT,
        smm=firmware in table.smm,
    )


def check_firmware(files: FirmwareFiles, arch: Arch = DEFAULT_ARCH) -> None:
    table = qemu_firmware(arch)
    for path in (files.code, files.vars_template):
        if not path.is_file():
            raise HostError(
                f"the UEFI firmware file {path} is missing",
                hint=f"install it with 'apt-get install {table.package}' (or run 'make setup'); "
                f"{table.directory_env} points osbake to another directory of "
                + " and ".join(sorted({p.name for p in (files.code, files.vars_template)})),
            )


def secure_boot_machine(arch: Arch) -> tuple[list[str], list[str]]:
    """The -machine options and further QEMU arguments SMM (Secure Boot) code needs."""
    table = qemu_firmware(arch)
    return list(table.secure_machine), list(table.secure_args)


def uboot_image(firmware: Firmware, arch: Arch = DEFAULT_ARCH) -> Path | None:
    """U-Boot, given to QEMU as -bios, for the extlinux firmware (None otherwise)."""
    if Firmware(firmware) != Firmware.EXTLINUX:
        return None
    table = qemu_firmware(arch)
    if table.uboot is None:
        raise UsageError(
            f"osbake cannot boot {arch} images with extlinux under QEMU",
            hint="extlinux (U-Boot) boots arm64 images",
        )
    path = Path(os.environ.get("OSBAKE_UBOOT", str(table.uboot)))
    if not path.is_file():
        raise HostError(
            f"U-Boot for QEMU ({path}) is missing",
            hint=f"install it with 'apt-get install {table.uboot_package}' (or run 'make setup'); "
            "OSBAKE_UBOOT points osbake to another u-boot.bin",
        )
    return path
