"""The QEMU command line for each firmware, accelerator and drive kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake import vm
from osbake.arch import Arch, Firmware
from osbake.errors import HostError, UsageError
from osbake.vm import qemu as vm_qemu
from osbake.vm.firmware import QEMU_FIRMWARE
from osbake.vm.qemu import _tcg_threads

DISK = vm.Media(Path("/w/overlay.qcow2"), "qcow2", vm.MediaKind.DISK)
ISO = vm.Media(Path("/img/live,1.iso"), "raw", vm.MediaKind.CDROM)


def machine(**changes: object) -> vm.Machine:
    fields: dict[str, object] = {
        "accel": vm.Accel.TCG,
        "firmware": vm.Firmware.BIOS,
        "memory": 1024,
        "cpus": 2,
        "drives": [vm.Drive(DISK, boot=True)],
        "console_log": Path("/w/console.log"),
    }
    fields.update(changes)
    return vm.Machine(**fields)  # type: ignore[arg-type]


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_bios_on_tcg() -> None:
    argv = vm.qemu_argv(machine())
    assert argv[0] == "qemu-system-x86_64"
    assert pairs(argv, "-machine") == ["q35"]
    assert pairs(argv, "-accel") == ["tcg"]
    assert "-cpu" not in argv
    assert pairs(argv, "-m") == ["1024"]
    assert pairs(argv, "-smp") == ["2"]
    assert "-no-reboot" not in argv  # a guest may reboot on its way up
    assert "-nodefaults" in argv
    assert not any("pflash" in a for a in argv)
    assert pairs(argv, "-chardev") == ["file,id=console,path=/w/console.log"]
    assert pairs(argv, "-serial") == ["chardev:console"]
    assert pairs(argv, "-drive") == ["if=none,id=drive0,file=/w/overlay.qcow2,format=qcow2"]
    assert pairs(argv, "-device")[0] == "virtio-blk-pci,drive=drive0,bootindex=0"


def test_kvm_uses_the_host_cpu() -> None:
    argv = vm.qemu_argv(machine(accel=vm.Accel.KVM))
    assert pairs(argv, "-accel") == ["kvm"]
    assert pairs(argv, "-cpu") == ["host"]


def test_uefi_uses_ovmf_and_a_private_variable_store() -> None:
    argv = vm.qemu_argv(machine(firmware=vm.Firmware.UEFI, vars_file=Path("/w/VARS.fd")))
    assert pairs(argv, "-machine") == ["q35"]
    assert pairs(argv, "-drive")[:2] == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "if=pflash,format=raw,unit=1,file=/w/VARS.fd",
    ]
    assert "-global" not in argv


def test_secure_boot_needs_smm_and_secure_flash() -> None:
    argv = vm.qemu_argv(machine(firmware=vm.Firmware.UEFI_SECUREBOOT, vars_file=Path("/w/VARS.fd")))
    assert pairs(argv, "-machine") == ["q35,smm=on"]
    assert pairs(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    assert pairs(argv, "-drive")[0].endswith("file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")


def test_uefi_without_a_variable_store_is_a_bug() -> None:
    with pytest.raises(ValueError, match="variable store"):
        vm.qemu_argv(machine(firmware=vm.Firmware.UEFI))


def test_the_debian_12_ovmf_files() -> None:
    # The names the ovmf package of Debian 12 installs (2022.11-6+deb12u2).
    uefi = vm.firmware_files(vm.Firmware.UEFI)
    secure = vm.firmware_files(vm.Firmware.UEFI_SECUREBOOT)
    assert vm.firmware_files(vm.Firmware.BIOS) is None
    assert uefi == vm.FirmwareFiles(
        Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"), False
    )
    assert secure == vm.FirmwareFiles(
        Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
        Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
        True,
        smm=True,
    )


def test_another_ovmf_directory_and_missing_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OSBAKE_OVMF_DIR", str(tmp_path))
    files = vm.firmware_files(vm.Firmware.UEFI)
    assert files is not None
    assert files.code == tmp_path / "OVMF_CODE_4M.fd"
    with pytest.raises(HostError, match=r"OVMF_CODE_4M\.fd is missing") as caught:
        vm.check_firmware(files)
    assert "apt-get install ovmf" in (caught.value.hint or "")


def test_cdroms_seeds_and_commas() -> None:
    seed = vm.Media(Path("/s/seed.iso"), "raw", vm.MediaKind.CDROM)
    vfat = vm.Media(Path("/s/seed.img"), "raw", vm.MediaKind.DISK)
    argv = vm.qemu_argv(machine(drives=[vm.Drive(seed, readonly=True), vm.Drive(ISO, boot=True)]))
    assert pairs(argv, "-drive") == [
        "if=none,id=drive0,file=/s/seed.iso,format=raw,media=cdrom,readonly=on",
        "if=none,id=drive1,file=/img/live,,1.iso,format=raw,media=cdrom,readonly=on",
    ]
    assert pairs(argv, "-device")[:3] == [
        "virtio-scsi-pci,id=scsi0",
        "scsi-cd,drive=drive0,bus=scsi0.0,bootindex=1",
        "ide-cd,drive=drive1,bus=ide.0,bootindex=0",
    ]
    argv = vm.qemu_argv(machine(drives=[vm.Drive(DISK, boot=True), vm.Drive(vfat, readonly=True)]))
    assert pairs(argv, "-drive")[1] == "if=none,id=drive1,file=/s/seed.img,format=raw,readonly=on"
    assert pairs(argv, "-device")[1] == "virtio-blk-pci,drive=drive1,bootindex=1"


def test_interactive_console_on_stdio_with_a_log() -> None:
    argv = vm.qemu_argv(machine(interactive=True))
    assert pairs(argv, "-chardev") == ["stdio,id=console,mux=on,signal=off,logfile=/w/console.log"]
    assert pairs(argv, "-mon") == ["chardev=console,mode=readline"]


def test_extra_arguments_come_last() -> None:
    argv = vm.qemu_argv(machine(extra_args=["-device", "e1000"]))
    assert argv[-2:] == ["-device", "e1000"]


def test_tcg_runs_one_vcpu_and_several_take_turns_on_one_thread() -> None:
    # Multi-threaded TCG hangs x86 guests (soft lockups, int3 oopses): one vCPU by
    # default, and several only single-threaded unless asked otherwise.
    assert vm.default_cpus(vm.Accel.TCG) == 1
    assert _tcg_threads(vm.Accel.TCG, 1, None) is None
    assert _tcg_threads(vm.Accel.TCG, 2, None) == vm.TcgThreads.SINGLE
    assert _tcg_threads(vm.Accel.TCG, 2, vm.TcgThreads.MULTI) == vm.TcgThreads.MULTI
    assert _tcg_threads(vm.Accel.KVM, 2, None) is None
    argv = vm.qemu_argv(machine(cpus=2, tcg_threads=vm.TcgThreads.SINGLE))
    assert pairs(argv, "-accel") == ["tcg,thread=single"]
    assert pairs(argv, "-smp") == ["2"]
    assert pairs(vm.qemu_argv(machine()), "-accel") == ["tcg"]


def test_the_machine_comes_from_the_architecture_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(vm_qemu, "host_arch", lambda: Arch.AMD64)
    monkeypatch.setenv("OSBAKE_AAVMF_DIR", str(tmp_path))
    arm = machine(arch=Arch.ARM64, firmware=vm.Firmware.UEFI, vars_file=Path("/w/VARS.fd"))
    argv = vm.qemu_argv(arm)
    qemu = Arch.ARM64.info.qemu
    assert qemu is not None
    assert argv[0] == qemu.binary
    assert pairs(argv, "-machine") == [qemu.machine]
    # Another architecture than the host's is emulated with its TCG CPU model.
    assert pairs(argv, "-cpu") == [qemu.tcg_cpu]
    # arm64's pointer authentication with QEMU's fast algorithm (QARMA5 is slow to emulate).
    assert qemu.tcg_cpu == "max,pauth-impdef=on"
    assert pairs(argv, "-drive")[:2] == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={tmp_path}/AAVMF_CODE.fd",
        "if=pflash,format=raw,unit=1,file=/w/VARS.fd",
    ]
    assert "-global" not in argv
    # KVM runs the host's own architecture with the host's CPU.
    assert pairs(vm.qemu_argv(machine(accel=vm.Accel.KVM)), "-cpu") == ["host"]


def test_i386_uefi_is_the_smm_build_of_ovmf_ia32_with_secure_boot_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Debian's ovmf-ia32 has only the Secure Boot (SMM) build of the code: the machine
    # gets SMM and secure flash, the variable store has no keys, so nothing is enforced.
    monkeypatch.setattr(vm_qemu, "host_arch", lambda: Arch.AMD64)
    monkeypatch.setenv("OSBAKE_OVMF_DIR", str(tmp_path))
    files = vm.firmware_files(vm.Firmware.UEFI, Arch.I386)
    assert files is not None
    assert (files.code.name, files.vars_template.name) == (
        "OVMF32_CODE_4M.secboot.fd",
        "OVMF32_VARS_4M.fd",
    )
    assert files.smm and not files.secure_boot
    argv = vm.qemu_argv(
        machine(arch=Arch.I386, firmware=vm.Firmware.UEFI, vars_file=Path("/w/VARS.fd"))
    )
    assert argv[0] == "qemu-system-i386"
    assert pairs(argv, "-machine") == ["q35,smm=on"]
    assert pairs(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    # amd64's plain UEFI is no SMM build: no SMM, no secure flash.
    monkeypatch.setenv("OSBAKE_OVMF_DIR", str(tmp_path))
    plain = vm.qemu_argv(machine(firmware=vm.Firmware.UEFI, vars_file=Path("/w/VARS.fd")))
    assert pairs(plain, "-machine") == ["q35"] and "-global" not in plain
    with pytest.raises(UsageError, match="cannot boot i386 images with uefi-secureboot"):
        vm.firmware_files(vm.Firmware.UEFI_SECUREBOOT, Arch.I386)


def test_firmwares_an_architecture_lacks_are_refused() -> None:
    with pytest.raises(UsageError, match="cannot boot arm64 images with bios"):
        vm.firmware_files(vm.Firmware.BIOS, Arch.ARM64)
    with pytest.raises(UsageError, match="cannot boot arm64 images with uefi-secureboot"):
        vm.firmware_files(vm.Firmware.UEFI_SECUREBOOT, Arch.ARM64)
    with pytest.raises(UsageError, match="cannot boot s390x images under QEMU"):
        vm.firmware_files(vm.Firmware.BIOS, Arch.S390X)
    assert vm.firmware_files(vm.Firmware.BIOS, Arch.I386) is None
    with pytest.raises(UsageError, match="cannot boot s390x images under QEMU"):
        vm.qemu_argv(machine(arch=Arch.S390X))


def test_every_architecture_in_the_firmware_table_boots_under_qemu() -> None:
    for arch, table in QEMU_FIRMWARE.items():
        assert arch.info.qemu is not None, arch
        assert table.bios == (Firmware.BIOS in arch.info.firmwares), arch
        assert set(table.uefi) <= set(arch.info.firmwares), arch


def test_user_network_options_join_the_nic() -> None:
    argv = vm.qemu_argv(machine(user_net=["net=169.254.0.0/16", "guestfwd=tcp:1.2.3.4:80-cmd:x"]))
    assert pairs(argv, "-nic") == [
        "user,model=virtio-net-pci,net=169.254.0.0/16,guestfwd=tcp:1.2.3.4:80-cmd:x"
    ]
    assert pairs(vm.qemu_argv(machine()), "-nic") == ["user,model=virtio-net-pci"]


def test_extlinux_boots_the_virt_machine_with_u_boot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(vm_qemu, "host_arch", lambda: Arch.AMD64)
    uboot = tmp_path / "u-boot.bin"
    uboot.write_bytes(b"u")
    monkeypatch.setenv("OSBAKE_UBOOT", str(uboot))
    assert vm.firmware_files(vm.Firmware.EXTLINUX, Arch.ARM64) is None  # no flash, no vars
    argv = vm.qemu_argv(machine(arch=Arch.ARM64, firmware=vm.Firmware.EXTLINUX))
    assert pairs(argv, "-bios") == [str(uboot)]
    assert pairs(argv, "-machine") == ["virt"] and "-drive" in argv
    assert not [d for d in pairs(argv, "-drive") if "pflash" in d]
    # Debian 12's u-boot-qemu puts it here; a missing file names the package.
    monkeypatch.delenv("OSBAKE_UBOOT")
    assert QEMU_FIRMWARE[Arch.ARM64].uboot == Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
    monkeypatch.setenv("OSBAKE_UBOOT", str(tmp_path / "missing.bin"))
    with pytest.raises(HostError, match="U-Boot for QEMU"):
        vm.qemu_argv(machine(arch=Arch.ARM64, firmware=vm.Firmware.EXTLINUX))
    with pytest.raises(UsageError, match="cannot boot amd64 images with extlinux"):
        vm.firmware_files(vm.Firmware.EXTLINUX, Arch.AMD64)
