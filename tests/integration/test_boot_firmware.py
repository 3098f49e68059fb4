"""`osbake boot` on each firmware: SeaBIOS, OVMF, and OVMF with Secure Boot enforced."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake import vm
from osbake.errors import BootError
from tests.integration.boot_media import MARKER, convert, grub_iso, sha256, signed_esp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grub_iso(tmp_path_factory.mktemp("media") / "grub.iso")


def test_bios_boots_the_iso(iso: Path, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    report = vm.boot(
        iso, firmware=vm.Firmware.BIOS, expect=["OSBAKE-PLATFORM-PC", MARKER], timeout=60,
        log_path=log,
    )  # fmt: skip
    report.check()
    assert report.outcome == vm.Outcome.MATCHED
    first, second = report.patterns
    assert first.seconds is not None
    assert second.seconds is not None
    assert 0 < first.seconds <= second.seconds < 60
    assert MARKER in log.read_text(errors="replace")
    assert report.console_log == log


def test_uefi_boots_the_iso(iso: Path) -> None:
    report = vm.boot(
        iso, firmware=vm.Firmware.UEFI, expect=["OSBAKE-PLATFORM-EFI", MARKER], timeout=90
    )
    report.check()
    assert report.firmware == vm.Firmware.UEFI


def test_uefi_boots_a_disk_and_keeps_the_vars_template(iso: Path, tmp_path: Path) -> None:
    # The hybrid ISO as a qcow2 disk: OVMF boots its EFI partition from virtio-blk.
    disk = convert(iso, "qcow2", tmp_path / "grub.qcow2")
    files = vm.firmware_files(vm.Firmware.UEFI)
    assert files is not None
    before = sha256(files.vars_template)
    report = vm.boot(disk, firmware=vm.Firmware.UEFI, expect=[MARKER], timeout=90)
    report.check()
    assert sha256(files.vars_template) == before


def test_secure_boot_refuses_unsigned_grub(iso: Path) -> None:
    # The same ISO boots under plain UEFI (above); with Secure Boot on, OVMF must
    # refuse its unsigned GRUB, so the marker never shows.
    report = vm.boot(
        iso,
        firmware=vm.Firmware.UEFI_SECUREBOOT,
        expect=[MARKER],
        fail_on=["Access Denied", "Security Violation"],
        timeout=90,
    )
    assert not report.passed
    assert report.outcome == vm.Outcome.FAILURE_PATTERN
    assert not report.patterns[0].matched
    assert not any(MARKER in line for line in report.tail)
    with pytest.raises(BootError, match=r"Access Denied|Security Violation"):
        report.check()


def test_secure_boot_runs_signed_shim_and_grub(tmp_path: Path) -> None:
    # Debian's GRUB sets lockdown=y when the firmware enforces Secure Boot.
    body = (
        'if [ "$lockdown" = "y" ]; then echo "OSBAKE-LOCKDOWN-ON"; fi\n'
        f'echo "{MARKER}"\nsleep 600\n'
    )
    esp = signed_esp(tmp_path / "esp.img", body)
    report = vm.boot(
        esp,
        firmware=vm.Firmware.UEFI_SECUREBOOT,
        expect=["OSBAKE-LOCKDOWN-ON", MARKER],
        fail_on=["Access Denied", "Security Violation"],
        timeout=120,
    )
    report.check()
