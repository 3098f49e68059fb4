"""The NIC and disk bus of a boot: QEMU's devices, the machine they need, the targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake import vm
from osbake.arch import Arch, Firmware
from osbake.errors import UsageError
from osbake.recipe import OutputFormat
from osbake.vm.hardware import check, target_platform
from tests.unit.vm.test_qemu_argv import DISK, ISO, machine, pairs

SEED_ISO = vm.Media(Path("/w/seed.iso"), "raw", vm.MediaKind.CDROM)


def devices(disk_bus: vm.DiskBus, nic: vm.Nic = vm.Nic.VIRTIO, **changes: object) -> list[str]:
    return vm.qemu_argv(machine(hardware=vm.Hardware(nic, disk_bus), **changes))


def test_the_default_is_virtio_on_q35() -> None:
    argv = vm.qemu_argv(machine())
    assert pairs(argv, "-machine") == ["q35"]
    assert pairs(argv, "-nic") == ["user,model=virtio-net-pci"]
    assert pairs(argv, "-device") == ["virtio-blk-pci,drive=drive0,bootindex=0", "virtio-rng-pci"]


@pytest.mark.parametrize(
    ("bus", "machine_type", "disk_devices"),
    [
        (vm.DiskBus.SCSI, "q35",
         ["virtio-scsi-pci,id=scsi0", "scsi-hd,drive=drive0,bootindex=0,bus=scsi0.0"]),
        (vm.DiskBus.PVSCSI, "q35",
         ["pvscsi,id=pvscsi0", "scsi-hd,drive=drive0,bootindex=0,bus=pvscsi0.0"]),
        (vm.DiskBus.SATA, "q35", ["ide-hd,drive=drive0,bootindex=0,bus=ide.0"]),
        (vm.DiskBus.NVME, "q35", ["nvme,drive=drive0,bootindex=0,serial=osbake0"]),
        (vm.DiskBus.IDE, "pc", ["ide-hd,drive=drive0,bootindex=0,bus=ide.0,unit=0"]),
    ],
)  # fmt: skip
def test_each_disk_bus(bus: vm.DiskBus, machine_type: str, disk_devices: list[str]) -> None:
    argv = devices(bus)
    assert pairs(argv, "-machine") == [machine_type]
    assert pairs(argv, "-device")[:-1] == disk_devices


@pytest.mark.parametrize(
    ("nic", "model"),
    [
        (vm.Nic.E1000, "e1000"),
        (vm.Nic.E1000E, "e1000e"),
        (vm.Nic.VMXNET3, "vmxnet3"),
        (vm.Nic.RTL8139, "rtl8139"),
        (vm.Nic.TULIP, "tulip"),
    ],
)
def test_each_nic_keeps_the_user_network_options(nic: vm.Nic, model: str) -> None:
    argv = devices(vm.DiskBus.VIRTIO, nic, user_net=["guestfwd=tcp:169.254.169.254:80-cmd:x"])
    assert pairs(argv, "-nic") == [f"user,model={model},guestfwd=tcp:169.254.169.254:80-cmd:x"]


def test_no_nic_means_no_network() -> None:
    argv = devices(vm.DiskBus.VIRTIO, vm.Nic.NONE)
    assert "-nic" not in argv
    assert "-netdev" not in argv


def test_a_seed_stays_on_virtio_and_shares_the_scsi_controller() -> None:
    seed_disk = vm.Drive(vm.Media(Path("/w/seed.img"), "raw", vm.MediaKind.DISK), readonly=True)
    argv = devices(vm.DiskBus.SCSI, drives=[vm.Drive(DISK, boot=True), vm.Drive(SEED_ISO)])
    assert pairs(argv, "-device").count("virtio-scsi-pci,id=scsi0") == 1
    assert "scsi-cd,drive=drive1,bus=scsi0.0,bootindex=1" in pairs(argv, "-device")
    argv = devices(vm.DiskBus.NVME, drives=[vm.Drive(DISK, boot=True), seed_disk])
    assert pairs(argv, "-device")[1] == "virtio-blk-pci,drive=drive1,bootindex=1"


def test_ide_slots_fill_the_piix_channels_and_the_ahci_ports() -> None:
    drives = [vm.Drive(DISK, boot=True)]
    iso = [vm.Drive(ISO, boot=True)]
    assert pairs(devices(vm.DiskBus.IDE, drives=iso), "-device")[0] == (
        "ide-cd,drive=drive0,bus=ide.0,unit=0,bootindex=0"
    )
    assert pairs(devices(vm.DiskBus.SATA, drives=drives), "-device")[0].endswith("bus=ide.0")


def test_check_refuses_what_the_machine_has_not() -> None:
    check(vm.Hardware(vm.Nic.E1000, vm.DiskBus.IDE), Arch.AMD64, Firmware.UEFI)
    check(vm.Hardware(vm.Nic.VIRTIO, vm.DiskBus.NVME), Arch.ARM64, Firmware.UEFI)
    with pytest.raises(UsageError, match="arm64 machine \\(virt\\) has no sata") as caught:
        check(vm.Hardware(vm.Nic.VIRTIO, vm.DiskBus.SATA), Arch.ARM64, Firmware.UEFI)
    assert "virtio" in (caught.value.hint or "")
    with pytest.raises(UsageError, match="no ide controller"):
        check(vm.Hardware(vm.Nic.VIRTIO, vm.DiskBus.IDE), Arch.ARM64, Firmware.UEFI)
    with pytest.raises(UsageError, match="OVMF\\) has no pvscsi driver"):
        check(vm.Hardware(vm.Nic.VMXNET3, vm.DiskBus.PVSCSI), Arch.AMD64, Firmware.UEFI)
    check(vm.Hardware(vm.Nic.VMXNET3, vm.DiskBus.PVSCSI), Arch.AMD64, Firmware.BIOS)
    with pytest.raises(UsageError, match="Secure Boot"):
        check(vm.Hardware(vm.Nic.VIRTIO, vm.DiskBus.IDE), Arch.AMD64, Firmware.UEFI_SECUREBOOT)


def test_each_disk_format_has_a_target_and_the_choice_resolves_it() -> None:
    disk_formats = {f for f in OutputFormat if f.value in {"qcow2", "raw", "vmdk", "vhd", "vhdx"}}
    assert disk_formats <= set(vm.FORMAT_TARGETS)
    assert target_platform("vmdk") == vm.Platform.VMWARE
    assert target_platform("vpc") == target_platform("vhdx") == vm.Platform.HYPERV
    assert target_platform("qcow2") == target_platform("vdi") == vm.Platform.KVM
    target = vm.HardwareChoice("target")
    assert target.resolve("vmdk") == vm.Hardware(vm.Nic.VMXNET3, vm.DiskBus.PVSCSI)
    assert target.resolve("vpc") == vm.Hardware(vm.Nic.TULIP, vm.DiskBus.IDE)
    assert target.resolve("raw") == vm.Hardware()
    # --nic and --disk-bus replace the platform's own.
    assert vm.HardwareChoice("target", nic="e1000").resolve("vmdk") == vm.Hardware(
        vm.Nic.E1000, vm.DiskBus.PVSCSI
    )
    assert vm.HardwareChoice(None, disk_bus="sata").resolve("vmdk") == vm.Hardware(
        vm.Nic.VIRTIO, vm.DiskBus.SATA
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hardware": "xen"}, "--hardware 'xen' is not a platform"),
        ({"nic": "ne2000"}, "--nic 'ne2000' is not a network card"),
        ({"disk_bus": "usb"}, "--disk-bus 'usb' is not a disk bus"),
    ],
)
def test_a_choice_of_unknown_devices_is_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        vm.HardwareChoice(**changes)
