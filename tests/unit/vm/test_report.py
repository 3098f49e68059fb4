"""BootReport: what it says about a boot, and the error a failed one raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osbake import vm
from osbake.errors import BootError


def report(**changes: object) -> vm.BootReport:
    fields: dict[str, object] = {
        "image": Path("/out/debian-cloud.qcow2"),
        "firmware": vm.Firmware.UEFI,
        "accelerator": vm.Accel.TCG,
        "passed": True,
        "outcome": vm.Outcome.MATCHED,
        "seconds": 51.2,
        "patterns": [vm.PatternResult("login:", True, 48.25, "debian login: ")],
        "tail": ["Debian GNU/Linux 12 debian ttyS0", "", "debian login: "],
        "console_log": Path("/out/debian-cloud.qcow2.console.log"),
    }
    fields.update(changes)
    return vm.BootReport(**fields)  # type: ignore[arg-type]


def test_a_passed_boot() -> None:
    passed = report()
    passed.check()
    assert passed.describe() == "debian-cloud.qcow2 (uefi, tcg) booted: 'login:' after 48.2s"


def test_the_report_as_json() -> None:
    data = json.loads(json.dumps(report().to_json()))
    assert data == {
        "image": "/out/debian-cloud.qcow2",
        "firmware": "uefi",
        "accelerator": "tcg",
        "cpus": 1,
        "tcg_threads": None,
        "notes": [],
        "passed": True,
        "outcome": "matched",
        "seconds": 51.2,
        "patterns": [
            {"pattern": "login:", "matched": True, "seconds": 48.25, "text": "debian login: "}
        ],
        "failure": None,
        "tail": ["Debian GNU/Linux 12 debian ttyS0", "", "debian login: "],
        "console_log": "/out/debian-cloud.qcow2.console.log",
        "qemu_status": None,
        "qemu_messages": [],
        "nic": "virtio",
        "disk_bus": "virtio",
    }


def test_the_report_names_hardware_other_than_the_default() -> None:
    hardware = vm.Hardware(vm.Nic.VMXNET3, vm.DiskBus.PVSCSI)
    assert report(hardware=hardware).describe() == (
        "debian-cloud.qcow2 (uefi, tcg, nic vmxnet3, disk bus pvscsi) booted: 'login:' after 48.2s"
    )
    assert report(hardware=hardware).to_json()["nic"] == "vmxnet3"


def test_a_timeout_raises_with_the_tail_and_where_the_log_is() -> None:
    failed = report(
        passed=False,
        outcome=vm.Outcome.TIMEOUT,
        seconds=300.04,
        patterns=[vm.PatternResult("Reached target", True, 20.0, "Reached target x"),
                  vm.PatternResult("login:")],
        tail=["[  OK  ] Started ssh.service", "Waiting for network..."],
    )  # fmt: skip
    with pytest.raises(BootError) as caught:
        failed.check()
    text = caught.value.render()
    assert text.startswith(
        "debian-cloud.qcow2 (uefi, tcg) failed: 'login:' did not show within 300s; "
        "seen: 'Reached target' after 20.0s\n  last 2 lines of the console:\n"
        "    | [  OK  ] Started ssh.service\n    | Waiting for network..."
    )
    assert "the whole console is in /out/debian-cloud.qcow2.console.log" in text
    assert "raise the timeout" in text
    assert caught.value.exit_code == 1


def test_a_failure_pattern() -> None:
    failed = report(
        passed=False,
        outcome=vm.Outcome.FAILURE_PATTERN,
        patterns=[vm.PatternResult("login:")],
        failure=vm.PatternResult("Kernel panic", True, 3.5, "Kernel panic - not syncing"),
        console_log=None,
    )
    with pytest.raises(BootError, match=r"showed 'Kernel panic' \(a failure pattern\) after 3.5s"):
        failed.check()


def test_an_early_exit_and_an_empty_console() -> None:
    failed = report(
        passed=False,
        outcome=vm.Outcome.EXITED,
        seconds=2.0,
        patterns=[vm.PatternResult("login:")],
        tail=[],
        qemu_status=0,
        qemu_messages=["qemu-system-x86_64: terminating on signal 15 from pid 42 (kill)"],
    )
    with pytest.raises(BootError) as caught:
        failed.check()
    assert "QEMU stopped after 2.0s (the guest powered off) before 'login:'" in str(caught.value)
    assert "QEMU said:\n    | qemu-system-x86_64: terminating on signal 15" in str(caught.value)
    assert "the console stayed empty" in str(caught.value)


def test_a_power_off_and_an_interactive_session() -> None:
    assert "powered off after 51.2s" in report(outcome=vm.Outcome.POWERED_OFF).describe()
    assert (
        "interactive session ended (QEMU status 0)"
        in report(outcome=vm.Outcome.INTERACTIVE, qemu_status=0).describe()
    )
