"""The QEMU command line: the machine (per architecture), its firmware, drives and console.

The architecture's QEMU binary, machine type and TCG CPU come from osbake.arch; the
firmware files and what Secure Boot needs of the machine from osbake.vm.firmware.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from osbake import arch as arch_mod
from osbake.arch import Arch, Firmware, Qemu
from osbake.errors import UsageError
from osbake.vm.firmware import DEFAULT_ARCH, firmware_files, secure_boot_machine, uboot_image
from osbake.vm.hardware import NIC_DEVICES, DiskBus, Hardware, machine_type
from osbake.vm.media import Drive, MediaKind

DEFAULT_MEMORY = 1024  # MiB


class Accel(StrEnum):
    KVM = "kvm"
    TCG = "tcg"


class TcgThreads(StrEnum):
    """How QEMU runs the vCPUs of an emulated (TCG) machine."""

    SINGLE = "single"  # one host thread takes turns between the vCPUs
    MULTI = "multi"  # a host thread per vCPU (MTTCG)


@dataclass(frozen=True)
class Machine:
    """Everything that goes on QEMU's command line."""

    accel: Accel
    firmware: Firmware
    memory: int
    cpus: int
    drives: list[Drive]
    console_log: Path
    interactive: bool = False
    vars_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    tcg_threads: TcgThreads | None = None  # None: QEMU's default (multi on x86 hosts)
    arch: Arch = DEFAULT_ARCH
    user_net: list[str] = field(default_factory=list)  # more -nic user options (guestfwd...)
    hardware: Hardware = field(default_factory=Hardware)  # the NIC and the boot disk's bus


def qemu_of(arch: Arch) -> Qemu:
    """How QEMU emulates `arch` (UsageError where it cannot)."""
    qemu = arch.info.qemu
    if qemu is None:
        raise UsageError(f"osbake cannot boot {arch} images under QEMU")
    return qemu


def host_arch() -> Arch | None:
    """The architecture of this machine, which KVM can run."""
    return arch_mod.from_any(platform.machine())


def _cpu(machine: Machine, qemu: Qemu) -> str | None:
    if machine.accel == Accel.KVM:
        return "host"
    # Under TCG a guest of the host's own architecture gets QEMU's default CPU model
    # (what osbake's TCG boots have always had); another architecture's machine gets
    # its TCG CPU, since the machine type's default may not run it (virt: 32-bit).
    if machine.arch == host_arch():
        return None
    return qemu.tcg_cpu


def _opt(value: str | os.PathLike[str]) -> str:
    """A value inside a QEMU option list (commas are doubled)."""
    return os.fspath(value).replace(",", ",,")


def qemu_argv(machine: Machine, qemu: str | None = None) -> list[str]:
    """The QEMU command line for `machine` (`qemu`: the binary's path, if found already)."""
    emulator = qemu_of(machine.arch)
    files = firmware_files(machine.firmware, machine.arch)
    secure = files is not None and files.smm
    secure_options, secure_args = secure_boot_machine(machine.arch) if secure else ([], [])
    argv = [qemu or emulator.binary, "-name", "osbake-boot"]
    kind = machine_type(machine.hardware, emulator.machine)
    argv += ["-machine", ",".join([kind, *secure_options])]
    accel = str(machine.accel)
    if machine.accel == Accel.TCG and machine.tcg_threads is not None:
        accel += f",thread={machine.tcg_threads}"
    argv += ["-accel", accel]
    cpu = _cpu(machine, emulator)
    if cpu is not None:
        argv += ["-cpu", cpu]
    argv += ["-smp", str(machine.cpus), "-m", str(machine.memory)]
    # No -no-reboot: firmware and guests may reset on their way up (a first boot
    # that sets up variables, cloud-init's reboot); a power-off ends QEMU.
    argv += ["-nodefaults", "-no-user-config", "-display", "none"]
    uboot = uboot_image(machine.firmware, machine.arch)
    if uboot is not None:
        argv += ["-bios", _opt(uboot)]
    if files is not None:
        if machine.vars_file is None:
            raise ValueError("UEFI needs a private copy of the variable store")
        if secure:
            argv += secure_args
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(files.code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_opt(machine.vars_file)}",
        ]  # fmt: skip
    log = _opt(machine.console_log)
    if machine.interactive:
        # The console on this terminal (Ctrl-A X quits, Ctrl-A C is QEMU's monitor),
        # and a copy in the log.
        argv += [
            "-chardev", f"stdio,id=console,mux=on,signal=off,logfile={log}",
            "-mon", "chardev=console,mode=readline",
        ]  # fmt: skip
    else:
        argv += ["-chardev", f"file,id=console,path={log}"]
    argv += ["-serial", "chardev:console"]
    buses = _Buses(kind)
    # Every drive gets a boot index (the boot drive first): UEFI firmware connects only
    # the devices in QEMU's boot order, and a seed should be visible to UEFI programs too.
    order = sorted(range(len(machine.drives)), key=lambda i: not machine.drives[i].boot)
    for index, drive in enumerate(machine.drives):
        spec = f"if=none,id=drive{index},file={_opt(drive.media.path)},format={drive.media.format}"
        boot = f",bootindex={order.index(index)}"
        if drive.media.kind == MediaKind.CDROM and drive.boot and not drive.scsi:
            # A bootable ISO gets a SATA drive: every installer and live system has
            # the AHCI driver.
            argv += ["-drive", f"{spec},media=cdrom,readonly=on"]
            argv += ["-device", f"ide-cd,drive=drive{index},{buses.ide()}{boot}"]
        elif drive.media.kind == MediaKind.CDROM:
            # A seed CD-ROM (and a live ISO osbake made) sits on virtio-scsi: cloud
            # kernels (Debian's cloud flavour) lack AHCI but have virtio-scsi and sr_mod.
            argv += buses.controller("virtio-scsi-pci", "scsi0")
            argv += ["-drive", f"{spec},media=cdrom,readonly=on"]
            argv += ["-device", f"scsi-cd,drive=drive{index},bus=scsi0.0{boot}"]
        else:
            argv += ["-drive", spec + (",readonly=on" if drive.readonly else "")]
            # The hardware's bus is the boot disk's; a seed disk stays on virtio-blk.
            bus = machine.hardware.disk_bus if drive.boot else DiskBus.VIRTIO
            argv += buses.disk(bus, index, boot)
    argv += _nic(machine)
    argv += ["-device", "virtio-rng-pci"]
    return argv + machine.extra_args


def _nic(machine: Machine) -> list[str]:
    device = NIC_DEVICES.get(machine.hardware.nic)
    if device is None:  # Nic.NONE: no card, so no user network either
        return []
    return ["-nic", ",".join(["user", f"model={device}", *machine.user_net])]


class _Buses:
    """The controllers and slots of one machine's drives, added as drives need them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ide_slots = 0
        self.controllers: set[str] = set()

    def controller(self, device: str, name: str) -> list[str]:
        if name in self.controllers:
            return []
        self.controllers.add(name)
        return ["-device", f"{device},id={name}"]

    def ide(self) -> str:
        """The next IDE/AHCI slot: q35's AHCI has six ports (ide.0-5) with one device
        each, i440fx's PIIX two channels (ide.0-1) with a master and a slave."""
        slot = self.ide_slots
        self.ide_slots += 1
        if self.kind == "pc":
            return f"bus=ide.{slot // 2},unit={slot % 2}"
        return f"bus=ide.{slot}"

    def disk(self, bus: DiskBus, index: int, boot: str) -> list[str]:
        """The device of disk `drive{index}` on `bus`, with `boot` (its boot index)."""
        drive = f"drive=drive{index}{boot}"
        if bus == DiskBus.VIRTIO:
            return ["-device", f"virtio-blk-pci,{drive}"]
        if bus == DiskBus.SCSI:
            return [*self.controller("virtio-scsi-pci", "scsi0"), "-device",
                    f"scsi-hd,{drive},bus=scsi0.0"]  # fmt: skip
        if bus == DiskBus.PVSCSI:
            return [*self.controller("pvscsi", "pvscsi0"), "-device",
                    f"scsi-hd,{drive},bus=pvscsi0.0"]  # fmt: skip
        if bus == DiskBus.NVME:
            return ["-device", f"nvme,{drive},serial=osbake{index}"]
        return ["-device", f"ide-hd,{drive},{self.ide()}"]  # sata (AHCI) or ide (PIIX)


def default_cpus(accel: Accel) -> int:
    """vCPUs when none are asked for: one under TCG (see `boot`), else up to two."""
    if accel == Accel.TCG:
        return 1
    return min(2, os.cpu_count() or 1)


def _tcg_threads(accel: Accel, cpus: int, asked: TcgThreads | None) -> TcgThreads | None:
    if accel != Accel.TCG:
        return None
    if asked is not None:
        return asked
    return TcgThreads.SINGLE if cpus > 1 else None
