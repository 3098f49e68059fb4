"""Choosing KVM or TCG: the environment override, the probe, and its cache."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from osbake import run, vm
from osbake.errors import UsageError
from osbake.vm import accel
from osbake.vm.accel import _reset_accelerator_cache


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSBAKE_ACCEL", raising=False)
    _reset_accelerator_cache()


def no_process(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("started a process")


@pytest.mark.parametrize("value", ["kvm", "tcg", " TCG "])
def test_osbake_accel_forces_the_choice(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OSBAKE_ACCEL", value)
    monkeypatch.setattr(run, "start", no_process)
    assert vm.choose_accelerator() == vm.Accel(value.strip().lower())


def test_a_bad_osbake_accel_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSBAKE_ACCEL", "hvf")
    with pytest.raises(UsageError, match="OSBAKE_ACCEL is 'hvf'"):
        vm.choose_accelerator()


def test_without_dev_kvm_no_probe_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel.os, "access", lambda *a: False)
    monkeypatch.setattr(run, "start", no_process)
    assert vm.choose_accelerator() == vm.Accel.TCG


def test_the_probe_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(accel, "kvm_works", lambda events=None: calls.append(1) or True)
    assert vm.choose_accelerator() == vm.Accel.KVM
    assert vm.choose_accelerator() == vm.Accel.KVM
    assert calls == [1]


def test_the_probe_boot_sector() -> None:
    sector = vm.PROBE_SECTOR
    assert len(sector) == 512
    assert sector[-2:] == b"\x55\xaa"
    # mov si, imm16 points at the message (the sector is loaded at 0x7c00).
    mov_si = sector.index(b"\xbe")
    (address,) = struct.unpack_from("<H", sector, mov_si + 1)
    assert sector[address - 0x7C00 :].startswith(vm.PROBE_MARK + b"\n\0")
    assert sector.startswith(bytes.fromhex("fafc31c08ed866b900000001664975fc"))


class FakeProbe:
    """Stands in for the probe's QEMU: writes the mark when `writes` says so."""

    def __init__(self, argv: list[str], writes: bool, exits: bool) -> None:
        chardev = argv[argv.index("-chardev") + 1]
        self.console = Path(chardev.split("path=", 1)[1])
        self.writes = writes
        self.exits = exits
        self.stopped = False
        self.argv = argv

    def poll(self) -> int | None:
        if self.writes:
            self.console.write_bytes(b"SeaBIOS\n" + vm.PROBE_MARK + b"\n")
        return 1 if self.exits else None

    def stop(self, grace: float = 5.0) -> int:
        self.stopped = True
        return 0


@pytest.mark.parametrize(
    ("writes", "exits", "expected"),
    [(True, False, True), (False, False, False), (False, True, False)],
)
def test_kvm_works_reads_the_probe_console(
    monkeypatch: pytest.MonkeyPatch, writes: bool, exits: bool, expected: bool
) -> None:
    made: list[FakeProbe] = []

    def start(argv: list[str], **kwargs: Any) -> FakeProbe:
        made.append(FakeProbe(argv, writes, exits))
        return made[-1]

    monkeypatch.setattr(accel.os, "access", lambda *a: True)
    monkeypatch.setattr(run, "require_tool", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(run, "start", start)
    monkeypatch.setattr(accel, "POLL_SECONDS", 0.001)
    assert vm.kvm_works(seconds=0.2) is expected
    (probe,) = made
    assert probe.stopped
    assert probe.argv[probe.argv.index("-accel") + 1] == "kvm"
    assert not probe.console.exists()  # the probe's directory is gone
