"""The one architecture model: every name and fact osbake needs about a CPU architecture.

A recipe names architectures by their Debian names (`arch: [amd64, arm64]`);
everything else (the kernel's and QEMU's names, the EFI loader's file name, the
GRUB platforms, the serial console, the OCI, Glance and EC2 names, the GPT type
of a root partition, which firmwares can boot it, Debian's kernel flavours and
GRUB packages) is looked up here and nowhere else. Adding an architecture is one
entry in `ARCHITECTURES` (plus its QEMU firmware files in osbake.vm.firmware, if it
boots under QEMU); docs/adding-an-architecture.md says what else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Arch(StrEnum):
    """Debian architecture names (what a recipe's `arch:` says)."""

    AMD64 = "amd64"
    ARM64 = "arm64"
    ARMHF = "armhf"
    I386 = "i386"
    PPC64EL = "ppc64el"
    RISCV64 = "riscv64"
    S390X = "s390x"

    @property
    def info(self) -> ArchInfo:
        return ARCHITECTURES[self]


class Firmware(StrEnum):
    """How an image boots (a recipe's `boot:`)."""

    BIOS = "bios"
    UEFI = "uefi"
    UEFI_SECUREBOOT = "uefi-secureboot"
    # U-Boot's distro boot (as on ARM boards): /boot/extlinux/extlinux.conf, no GRUB.
    EXTLINUX = "extlinux"

    @property
    def is_uefi(self) -> bool:
        return self in (Firmware.UEFI, Firmware.UEFI_SECUREBOOT)


@dataclass(frozen=True)
class Qemu:
    """How QEMU emulates a machine of this architecture."""

    binary: str  # qemu-system-*
    machine: str  # -machine, without options
    tcg_cpu: str  # -cpu under TCG
    console: str  # the first serial port as the guest kernel names it


@dataclass(frozen=True)
class ArchInfo:
    debian: str
    kernel: str  # `uname -m` in a guest of this architecture
    # QEMU's user-mode name (qemu-<this>-static, binfmt_misc's qemu-<this> handler).
    qemu_user: str
    # EFI: GRUB's platform, and the suffix of the removable loader (BOOT<SUFFIX>.EFI)
    # and of Debian's shim and signed GRUB files (shim<suffix>.efi.signed).
    grub_efi: str | None
    efi_suffix: str | None
    # Debian's name for it in package names (grub-efi-<name>-bin, grub-efi-<name>-signed).
    debian_efi: str | None
    grub_bios: str | None  # GRUB's BIOS platform, where PCs boot with a BIOS
    secure_boot: bool  # Debian ships a signed shim and GRUB
    console: str  # the first serial port, as the kernel names it (console=<this>)
    # Debian's kernel flavours (linux-image-<flavour>): the generic kernel, and the
    # cloud kernel where Debian has one.
    linux_flavour: str
    linux_cloud_flavour: str | None
    microcode: tuple[str, ...]  # Debian's CPU microcode packages (non-free-firmware)
    oci: str  # GOARCH
    oci_variant: str | None
    glance: str  # Glance's `architecture` image property
    ec2: str | None  # EC2's RegisterImage Architecture, where EC2 has it
    gpt_root: str  # Discoverable Partitions Specification type GUIDs
    gpt_usr: str | None
    qemu: Qemu | None  # None: osbake cannot boot it under QEMU
    # Other architectures (Debian names) whose programs its CPUs run without emulation.
    runs: tuple[str, ...] = ()
    extlinux: bool = False  # boards boot it with U-Boot reading extlinux.conf

    @property
    def firmwares(self) -> tuple[Firmware, ...]:
        """The firmwares an image of this architecture can boot with."""
        modes: list[Firmware] = []
        if self.grub_bios:
            modes.append(Firmware.BIOS)
        if self.grub_efi:
            modes.append(Firmware.UEFI)
            if self.secure_boot:
                modes.append(Firmware.UEFI_SECUREBOOT)
        if self.extlinux:
            modes.append(Firmware.EXTLINUX)
        return tuple(modes)

    @property
    def efi_loader(self) -> str:
        """The removable-media loader's file name on the ESP, e.g. BOOTX64.EFI."""
        if self.efi_suffix is None:
            raise ValueError(f"{self.debian} has no UEFI")
        return f"BOOT{self.efi_suffix.upper()}.EFI"

    def grub_platform(self, firmware: Firmware) -> str | None:
        """GRUB's platform for a firmware (i386-pc, x86_64-efi, ...; None: no GRUB)."""
        if firmware == Firmware.EXTLINUX:
            return None
        return self.grub_efi if firmware.is_uefi else self.grub_bios

    def grub_package(self, firmware: Firmware) -> str | None:
        """Debian's package of GRUB's modules for a firmware (grub-pc-bin, grub-efi-...-bin)."""
        platform = self.grub_platform(firmware)
        if platform is None:
            return None
        if firmware.is_uefi:
            return f"grub-efi-{self.debian_efi}-bin"
        return f"grub-{platform.partition('-')[2]}-bin"  # i386-pc: grub-pc-bin

    def secure_boot_packages(self) -> list[str]:
        """Debian's signed shim and GRUB, where it has them."""
        if not self.secure_boot:
            return []
        return ["shim-signed", f"grub-efi-{self.debian_efi}-signed"]

    def kernel_flavour(self, kernel: str) -> str | None:
        """Debian's flavour for a recipe's `kernel: cloud` or `generic` (None: none here)."""
        if kernel == "cloud":
            return self.linux_cloud_flavour
        if kernel == "generic":
            return self.linux_flavour
        return None

    def environment(self) -> dict[str, str]:
        """What phase scripts learn about the architecture (docs/elements.md)."""
        return {
            "OSBAKE_ARCH": self.debian,
            "OSBAKE_CONSOLE": self.console,
            "OSBAKE_ARCH_MICROCODE": " ".join(self.microcode),
        }

    def boot_summary(self) -> str:
        """The firmwares it boots with, for messages: 'bios, uefi' or 'no firmware osbake
        can install a bootloader for'."""
        if not self.firmwares:
            return "no firmware osbake can install a bootloader for"
        return ", ".join(str(f) for f in self.firmwares)


_PC_QEMU = Qemu("qemu-system-x86_64", "q35", "max", "ttyS0")

ARCHITECTURES: dict[Arch, ArchInfo] = {
    Arch.AMD64: ArchInfo(
        debian="amd64",
        kernel="x86_64",
        qemu_user="x86_64",
        grub_efi="x86_64-efi",
        efi_suffix="x64",
        debian_efi="amd64",
        grub_bios="i386-pc",
        secure_boot=True,
        console="ttyS0",
        linux_flavour="amd64",
        linux_cloud_flavour="cloud-amd64",
        microcode=("amd64-microcode", "intel-microcode"),
        oci="amd64",
        oci_variant=None,
        glance="x86_64",
        ec2="x86_64",
        gpt_root="4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        gpt_usr="8484680C-9521-48C6-9C11-B0720656F69E",
        qemu=_PC_QEMU,
        runs=("i386",),  # x86-64 CPUs run 32-bit x86 programs
    ),
    Arch.ARM64: ArchInfo(
        debian="arm64",
        kernel="aarch64",
        qemu_user="aarch64",
        grub_efi="arm64-efi",
        efi_suffix="aa64",
        debian_efi="arm64",
        grub_bios=None,
        secure_boot=True,
        console="ttyAMA0",
        linux_flavour="arm64",
        linux_cloud_flavour="cloud-arm64",
        microcode=(),
        oci="arm64",
        oci_variant="v8",
        glance="aarch64",
        ec2="arm64",
        gpt_root="B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        gpt_usr="B0E01050-EE5F-4390-949A-9101B17104E9",
        # Pointer authentication with QEMU's own algorithm, not the architected QARMA5:
        # Debian's kernel and programs sign and check return addresses in every
        # function, and QARMA5 is slow to emulate (side by side on one host: the board
        # image to login 372 s with QARMA5, 217 s with this; the cloud image to
        # cloud-init done 283 s and 152 s; docs/benchmarks.md).
        qemu=Qemu("qemu-system-aarch64", "virt", "max,pauth-impdef=on", "ttyAMA0"),
        extlinux=True,
    ),
    Arch.I386: ArchInfo(
        debian="i386",
        kernel="i686",
        qemu_user="i386",
        grub_efi="i386-efi",
        efi_suffix="ia32",
        debian_efi="ia32",
        grub_bios="i386-pc",
        secure_boot=False,  # Debian ships no signed shim for ia32
        console="ttyS0",
        linux_flavour="686-pae",
        linux_cloud_flavour=None,
        microcode=("amd64-microcode", "intel-microcode"),
        oci="386",
        oci_variant=None,
        glance="i686",
        ec2="i386",
        gpt_root="44479540-F297-41B2-9AF7-D131D5F0458A",
        gpt_usr="75250D76-8CC6-458E-BD66-BD47CC81A812",
        qemu=Qemu("qemu-system-i386", "q35", "max", "ttyS0"),
    ),
    Arch.ARMHF: ArchInfo(
        debian="armhf",
        kernel="armv7l",
        qemu_user="arm",
        grub_efi="arm-efi",
        efi_suffix="arm",
        debian_efi="arm",
        grub_bios=None,
        secure_boot=False,
        console="ttyAMA0",
        linux_flavour="armmp",
        linux_cloud_flavour=None,
        microcode=(),
        oci="arm",
        oci_variant="v7",
        glance="armv7l",
        ec2=None,
        gpt_root="69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
        gpt_usr="7D0359A3-02B3-4F0A-865C-654403E70625",
        qemu=None,
    ),
    Arch.PPC64EL: ArchInfo(
        debian="ppc64el",
        kernel="ppc64le",
        qemu_user="ppc64le",
        grub_efi=None,
        efi_suffix=None,
        debian_efi=None,
        grub_bios=None,
        secure_boot=False,
        console="hvc0",
        linux_flavour="powerpc64le",
        linux_cloud_flavour=None,
        microcode=(),
        oci="ppc64le",
        oci_variant=None,
        glance="ppc64le",
        ec2=None,
        gpt_root="C31C45E6-3F39-412E-80FB-4809C4980599",
        gpt_usr="15BB03AF-77E7-4D4A-B12B-C0D084F7491C",
        qemu=None,
    ),
    Arch.RISCV64: ArchInfo(
        debian="riscv64",
        kernel="riscv64",
        qemu_user="riscv64",
        grub_efi="riscv64-efi",
        efi_suffix="riscv64",
        debian_efi="riscv64",
        grub_bios=None,
        secure_boot=False,
        console="ttyS0",
        linux_flavour="riscv64",
        linux_cloud_flavour=None,
        microcode=(),
        oci="riscv64",
        oci_variant=None,
        glance="riscv64",
        ec2=None,
        gpt_root="72EC70A6-CF74-40E6-BD49-4BDA08E8F224",
        gpt_usr="BEAEC34B-8442-439B-A40B-984381ED097D",
        qemu=None,
    ),
    Arch.S390X: ArchInfo(
        debian="s390x",
        kernel="s390x",
        qemu_user="s390x",
        grub_efi=None,
        efi_suffix=None,
        debian_efi=None,
        grub_bios=None,
        secure_boot=False,
        console="ttysclp0",
        linux_flavour="s390x",
        linux_cloud_flavour=None,
        microcode=(),
        oci="s390x",
        oci_variant=None,
        glance="s390x",
        ec2=None,
        gpt_root="5EEAD9A9-FE09-4A1E-A1D7-520D00531306",
        gpt_usr="8A4F5770-50AA-4ED3-874A-99B710DB6FEA",
        qemu=None,
    ),
}


def from_any(name: str) -> Arch | None:
    """An architecture from any of its names (Debian, kernel, OCI, Glance, EC2)."""
    for arch, info in ARCHITECTURES.items():
        if name in (info.debian, info.kernel, info.oci, info.glance, info.ec2):
            return arch
    return None
