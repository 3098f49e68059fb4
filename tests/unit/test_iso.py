"""The live ISO: plan-time checks with file:line, its settings, GRUB's files, the disk
step a live build leaves out, and `osbake boot` putting osbake's ISOs on virtio-scsi."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake import vm
from osbake.context import StepKind
from osbake.distros.debian import Debian
from osbake.errors import RecipeError
from osbake.outputs import iso
from osbake.plan import check_recipe, resolve_plan
from osbake.publish.streams import ftype_for
from osbake.recipe import load
from osbake.vm.media import APPLICATION_ID_OFFSET, cdrom_on_scsi, made_by_osbake
from tests.conftest import EXAMPLES

BASE = "name: t\ndistro: debian\nrelease: bookworm\nkernel: cloud\nboot: [bios, uefi]\n"


@pytest.fixture(autouse=True)
def fixed_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"http://mirror.invalid/debian bookworm": {"sha256": "0" * 64, "date": "d"}}
    monkeypatch.setattr(Debian, "mirror_state", lambda self: dict(state))
    monkeypatch.setattr(Debian, "_mmdebstrap_version", "mmdebstrap 1.3.5", raising=False)


def refused(tmp_path: Path, text: str) -> RecipeError:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        resolve_plan(load(path))
    assert info.value.location is not None and info.value.location.file == path
    return info.value


def test_an_iso_without_the_live_element_is_refused_at_its_output(tmp_path: Path) -> None:
    err = refused(tmp_path, BASE + "elements: [vm]\noutputs:\n  - tar\n  - iso\n")
    assert err.location is not None and err.location.line == 9
    assert "lacks the 'live' element" in err.message
    assert err.hint is not None and "add 'live' to elements" in err.hint


def test_an_iso_without_a_kernel_is_refused_at_kernel(tmp_path: Path) -> None:
    text = BASE.replace("kernel: cloud", "kernel: none") + "elements: [vm, live]\noutputs: [iso]\n"
    err = refused(tmp_path, text)
    assert err.location is not None and err.location.line == 4
    assert "no kernel" in err.message


def test_an_iso_without_firmwares_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("boot: [bios, uefi]\n", "") + "elements: [vm, live]\noutputs: [iso]\n"
    err = refused(tmp_path, text)
    assert "names no firmware" in err.message
    assert err.hint is not None and "boot: [bios, uefi]" in err.hint


def test_a_live_tree_with_a_disk_output_is_refused(tmp_path: Path) -> None:
    err = refused(tmp_path, BASE + "elements: [vm, live]\noutputs:\n  - iso\n  - qcow2\n")
    assert err.location is not None and err.location.line == 9
    assert "does not boot from a disk" in err.message and "'qcow2'" in err.message


def test_the_live_variant_of_the_cloud_example() -> None:
    recipe = load(EXAMPLES / "debian-cloud.yaml")
    assert (("live", recipe.arch[0])) in check_recipe(recipe)
    plan = resolve_plan(recipe, "live")
    assert plan.image == "debian-cloud-live"
    assert "live-boot" in plan.packages
    assert "boot=live" in plan.cmdline.split()
    # The vm element's layout is planned (fstab, GRUB in the tree) but no disk is made.
    assert plan.disk is not None
    assert [s.kind for s in plan.steps if s.kind in (StepKind.DISK, StepKind.OUTPUT)] == [
        StepKind.OUTPUT
    ]
    step = plan.step("output:iso")
    assert step.inputs == {"format": "iso", "settings": {"compression": "zstd", "level": None}}
    assert "osbake.disk.bootloader" in step.code
    # The base recipe (no iso) keeps its disk step and its outputs' code.
    base = resolve_plan(recipe)
    assert any(s.kind == StepKind.DISK for s in base.steps)
    assert "osbake.disk.bootloader" not in base.step("output:qcow2").code


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{compression: lz4}", "'zstd' or 'xz'"),
        ("{compression: xz, level: 3}", "level is zstd's"),
        ("{level: 30}", "less than or equal to 22"),
    ],
)
def test_iso_settings_are_checked(tmp_path: Path, options: str, message: str) -> None:
    text = BASE + f"elements: [vm, live]\noutputs: [iso]\noutput_options:\n  iso: {options}\n"
    err = refused(tmp_path, text)
    assert message in err.message


def test_live_grub_configuration() -> None:
    cmdline = iso.live_cmdline("console=tty0 boot=live console=ttyS0,115200")
    assert cmdline == "boot=live console=tty0 console=ttyS0,115200"
    cfg = iso.live_grub_cfg("Debian GNU/Linux (live)", cmdline, serial=True)
    assert "serial --unit=0 --speed=115200" in cfg
    assert "\tlinux /live/vmlinuz boot=live console=tty0 console=ttyS0,115200\n" in cfg
    assert "\tinitrd /live/initrd.img\n" in cfg
    assert "menuentry 'it'\\''s' " in iso.live_grub_cfg("it's", "boot=live", serial=False)
    assert "serial" not in iso.live_grub_cfg("x", "boot=live", serial=False)


def test_the_volume_date_is_the_uuid_grub_searches_for() -> None:
    assert iso.volume_date(1795913593) == "2026112900531300"
    assert iso.grub_uuid("2026120107461600") == "2026-12-01-07-46-16-00"
    assert "search --no-floppy --fs-uuid --set=root 2026-12-01-07-46-16-00\n" in iso.early_cfg(
        "2026-12-01-07-46-16-00"
    )
    assert iso.volume_label("debian-cloud-live") == "DEBIAN_CLOUD_LIVE"
    assert len(iso.volume_label("x" * 64)) == 32


def test_publish_calls_it_iso() -> None:
    assert ftype_for("iso") == "iso"


def _iso(path: Path, application: bytes) -> Path:
    data = bytearray(0x8000 + 2048)
    data[0x8001:0x8006] = b"CD001"
    data[APPLICATION_ID_OFFSET : APPLICATION_ID_OFFSET + len(application)] = application
    path.write_bytes(bytes(data))
    return path


def test_osbake_live_isos_boot_from_virtio_scsi(tmp_path: Path) -> None:
    ours = _iso(tmp_path / "live.iso", b"OSBAKE LIVE debian-cloud-live")
    other = _iso(tmp_path / "other.iso", b"GRUB")
    assert made_by_osbake(ours) and not made_by_osbake(other)
    assert cdrom_on_scsi(ours, vm.CdromBus.AUTO)
    assert not cdrom_on_scsi(other, vm.CdromBus.AUTO)
    assert cdrom_on_scsi(other, vm.CdromBus.SCSI)
    assert not cdrom_on_scsi(ours, vm.CdromBus.SATA)
    media = vm.Media(ours, "raw", vm.MediaKind.CDROM)
    machine = vm.Machine(
        accel=vm.Accel.TCG,
        firmware=vm.Firmware.BIOS,
        memory=1024,
        cpus=1,
        drives=[vm.Drive(media, boot=True, scsi=True)],
        console_log=tmp_path / "console.log",
    )
    argv = vm.qemu_argv(machine)
    devices = [a for i, a in enumerate(argv) if argv[i - 1] == "-device"]
    assert devices[:2] == [
        "virtio-scsi-pci,id=scsi0",
        "scsi-cd,drive=drive0,bus=scsi0.0,bootindex=0",
    ]
