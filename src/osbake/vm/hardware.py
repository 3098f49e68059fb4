"""The hardware a boot presents: the network card and the bus of the boot disk.

Clouds and hypervisors present different devices, and a kernel lacking the driver
of one does not see it (Debian's cloud kernel has no e1000 and no AHCI). A boot
picks a NIC model and a disk bus (`--nic`, `--disk-bus`), or a platform's set
(`--hardware vmware`), or the set of the platform its image format is made for
(`--hardware target`: a .vmdk boots as on VMware). The table of which format
targets which platform is `FORMAT_TARGETS`, here and nowhere else; docs/boot.md
lists it with the drivers each Debian kernel has.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from osbake.arch import Arch, Firmware
from osbake.errors import UsageError
from osbake.recipe import OutputFormat


class Nic(StrEnum):
    """A network card model (`--nic`)."""

    VIRTIO = "virtio"  # virtio-net: KVM clouds (OpenStack, GCE, ...)
    E1000 = "e1000"  # Intel 82540EM: QEMU's own default, VMware's and VirtualBox's e1000
    E1000E = "e1000e"  # Intel 82574L: VMware's e1000e
    VMXNET3 = "vmxnet3"  # VMware's paravirtual NIC
    RTL8139 = "rtl8139"  # Realtek 8139: old QEMU/libvirt defaults
    TULIP = "tulip"  # DEC 21143: Hyper-V's "legacy network adapter" is a DEC 21140
    NONE = "none"  # no network card at all


NIC_DEVICES: dict[Nic, str] = {
    Nic.VIRTIO: "virtio-net-pci",
    Nic.E1000: "e1000",
    Nic.E1000E: "e1000e",
    Nic.VMXNET3: "vmxnet3",
    Nic.RTL8139: "rtl8139",
    Nic.TULIP: "tulip",
}


class DiskBus(StrEnum):
    """How the boot disk is attached (`--disk-bus`)."""

    VIRTIO = "virtio"  # virtio-blk
    SCSI = "scsi"  # virtio-scsi
    PVSCSI = "pvscsi"  # VMware's paravirtual SCSI controller
    SATA = "sata"  # AHCI: the q35 machine's own controller
    NVME = "nvme"
    IDE = "ide"  # PIIX IDE: the older i440fx ("pc") machine's own controller


# Disk buses that need a machine type of their own; any other bus is a PCI device
# that every machine with PCI takes. IDE switches a PC from q35 to i440fx.
BUS_MACHINES: dict[DiskBus, dict[str, str]] = {
    DiskBus.IDE: {"q35": "pc", "pc": "pc"},
    DiskBus.SATA: {"q35": "q35"},
}


class Platform(StrEnum):
    """A set of devices as a kind of hypervisor presents them (`--hardware`)."""

    KVM = "kvm"
    VMWARE = "vmware"
    HYPERV = "hyperv"


@dataclass(frozen=True)
class Hardware:
    nic: Nic = Nic.VIRTIO
    disk_bus: DiskBus = DiskBus.VIRTIO

    def describe(self) -> str:
        return f"nic {self.nic}, disk bus {self.disk_bus}"


PLATFORMS: dict[Platform, Hardware] = {
    # OpenStack/KVM, GCE and most clouds: virtio everywhere (osbake's default).
    Platform.KVM: Hardware(Nic.VIRTIO, DiskBus.VIRTIO),
    # ESXi/vSphere's paravirtual pair, which VMware Tools' guests are set up with.
    Platform.VMWARE: Hardware(Nic.VMXNET3, DiskBus.PVSCSI),
    # Hyper-V generation 1 as far as QEMU emulates it: the IDE boot disk and the legacy
    # network adapter (its synthetic VMBus devices, and generation 2, QEMU has not).
    Platform.HYPERV: Hardware(Nic.TULIP, DiskBus.IDE),
}

# The one table of which platform each disk output format is made for.
FORMAT_TARGETS: dict[OutputFormat, Platform] = {
    OutputFormat.QCOW2: Platform.KVM,
    OutputFormat.RAW: Platform.KVM,
    OutputFormat.RAW_TAR_XZ: Platform.KVM,
    OutputFormat.RAW_TAR_GZ: Platform.KVM,
    OutputFormat.VMDK: Platform.VMWARE,
    OutputFormat.VHD: Platform.HYPERV,
    OutputFormat.VHDX: Platform.HYPERV,
}

# QEMU's name of an image's format (what `qemu-img info` says) -> the output format.
QEMU_FORMATS: dict[str, OutputFormat] = {
    "qcow2": OutputFormat.QCOW2,
    "raw": OutputFormat.RAW,
    "vmdk": OutputFormat.VMDK,
    "vpc": OutputFormat.VHD,
    "vhdx": OutputFormat.VHDX,
}

TARGET = "target"  # `--hardware target`: the platform of the image's format
HARDWARE_CHOICES = [TARGET, *(str(p) for p in Platform)]


def target_platform(qemu_format: str) -> Platform:
    """The platform an image of this QEMU format is made for (KVM when no format says)."""
    fmt = QEMU_FORMATS.get(qemu_format)
    return FORMAT_TARGETS.get(fmt, Platform.KVM) if fmt is not None else Platform.KVM


@dataclass(frozen=True)
class HardwareChoice:
    """What a boot was asked for: a platform's devices (`hardware`: a Platform, TARGET
    for the image format's platform, None for the default), with `nic` and `disk_bus`
    replacing its own where given. Resolved once the image's format is known."""

    hardware: str | None = None
    nic: Nic | str | None = None
    disk_bus: DiskBus | str | None = None

    def __post_init__(self) -> None:
        if self.hardware is not None and self.hardware not in HARDWARE_CHOICES:
            raise UsageError(
                f"--hardware {self.hardware!r} is not a platform osbake knows",
                hint=f"give one of {', '.join(HARDWARE_CHOICES)}",
            )
        if self.nic is not None and self.nic not in set(Nic):
            raise UsageError(
                f"--nic {self.nic!r} is not a network card osbake knows",
                hint=f"give one of {', '.join(Nic)}",
            )
        if self.disk_bus is not None and self.disk_bus not in set(DiskBus):
            raise UsageError(
                f"--disk-bus {self.disk_bus!r} is not a disk bus osbake knows",
                hint=f"give one of {', '.join(DiskBus)}",
            )

    def resolve(self, qemu_format: str) -> Hardware:
        if self.hardware is None:
            base = Hardware()
        elif self.hardware == TARGET:
            base = PLATFORMS[target_platform(qemu_format)]
        else:
            base = PLATFORMS[Platform(self.hardware)]
        return Hardware(
            Nic(self.nic) if self.nic is not None else base.nic,
            DiskBus(self.disk_bus) if self.disk_bus is not None else base.disk_bus,
        )


def machine_type(hardware: Hardware, default: str) -> str:
    """The QEMU machine that has the disk bus (`default`: the architecture's)."""
    machines = BUS_MACHINES.get(hardware.disk_bus)
    if machines is None:
        return default
    return machines[default]


def check(hardware: Hardware, arch: Arch, firmware: Firmware) -> None:
    """UsageError unless this architecture's QEMU machine (and firmware) can have it."""
    qemu = arch.info.qemu
    if qemu is None:
        raise UsageError(f"osbake cannot boot {arch} images under QEMU")
    machines = BUS_MACHINES.get(hardware.disk_bus)
    if machines is not None and qemu.machine not in machines:
        has = ", ".join(str(b) for b in DiskBus if b not in BUS_MACHINES)
        raise UsageError(
            f"--disk-bus {hardware.disk_bus}: the {arch} machine ({qemu.machine}) has no "
            f"{hardware.disk_bus} controller",
            hint=f"its disks go on {has}",
        )
    if hardware.disk_bus == DiskBus.PVSCSI and firmware != Firmware.BIOS:
        # Debian 12's OVMF is built without PvScsiDxe: it finds no disk and drops to
        # its shell (SeaBIOS boots from pvscsi).
        raise UsageError(
            "--disk-bus pvscsi: the UEFI firmware (OVMF) has no pvscsi driver, so it "
            "cannot boot from that disk",
            hint="boot with --firmware bios, or put the disk on scsi (virtio-scsi) or nvme",
        )
    if machine_type(hardware, qemu.machine) == "pc" and firmware == Firmware.UEFI_SECUREBOOT:
        raise UsageError(
            "--disk-bus ide needs QEMU's i440fx (pc) machine, where OVMF has no Secure Boot",
            hint="boot with --firmware uefi or bios, or put the disk on sata or scsi",
        )
