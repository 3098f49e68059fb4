"""boot() end to end with a fake QEMU: when it stops, what it reports, what it cleans."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from osbake import run as osbake_run
from osbake import vm
from osbake.arch import Arch
from osbake.errors import CommandError, UsageError
from osbake.events import Events
from osbake.vm import media, runner
from osbake.vm import qemu as vm_qemu


class FakeQemu:
    """Writes one scripted console chunk per poll; None in the script means 'exit'."""

    def __init__(self, argv: list[str], script: list[bytes | None], status: int, kwargs: Any):
        self.argv = argv
        self.kwargs = kwargs
        chardev = argv[argv.index("-chardev") + 1]
        key = "logfile=" if "logfile=" in chardev else "path="
        self.console = Path(chardev.split(key, 1)[1])
        self.script = list(script)
        self.status = status
        self.exited: int | None = None
        self.stopped = False

    def poll(self) -> int | None:
        if self.exited is None and self.script:
            chunk = self.script.pop(0)
            if chunk is None:
                self.exited = self.status
                if self.status and self.kwargs.get("stderr") is not None:
                    self.kwargs["stderr"].write(b"qemu-system-x86_64: could not open disk\n")
                    self.kwargs["stderr"].flush()
            else:
                with self.console.open("ab") as handle:
                    handle.write(chunk)
        return self.exited

    def wait(self, timeout: float | None = None) -> int | None:
        self.exited = self.status
        return self.exited

    def stop(self, grace: float = 5.0) -> int:
        self.stopped = True
        return self.exited if self.exited is not None else 0

    def __enter__(self) -> FakeQemu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    state: dict[str, Any] = {"script": [], "status": 0, "qemus": [], "commands": [], "fmt": "qcow2"}

    def start(argv: list[str], **kwargs: Any) -> FakeQemu:
        qemu = FakeQemu(argv, state["script"], state["status"], kwargs)
        state["qemus"].append(qemu)
        return qemu

    def run(argv: list[Any], **kwargs: Any) -> None:
        state["commands"].append([os.fspath(a) for a in argv])

    ovmf = tmp_path / "ovmf"
    ovmf.mkdir()
    for name in (
        "OVMF_CODE_4M.fd",
        "OVMF_VARS_4M.fd",
        "OVMF_CODE_4M.secboot.fd",
        "OVMF_VARS_4M.ms.fd",
    ):
        (ovmf / name).write_bytes(name.encode())  # fmt: skip
    monkeypatch.setenv("OSBAKE_OVMF_DIR", str(ovmf))
    monkeypatch.setattr(osbake_run, "start", start)
    monkeypatch.setattr(osbake_run, "run", run)
    monkeypatch.setattr(osbake_run, "require_tool", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(media, "detect_format", lambda path, events=None: state["fmt"])
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.001)
    state["work"] = tmp_path / "work"
    state["work"].mkdir()
    state["image"] = tmp_path / "disk.qcow2"
    state["image"].write_bytes(b"QFI\xfb" + bytes(1000))
    return state


def boot(fake: dict[str, Any], **kwargs: Any) -> vm.BootReport:
    kwargs.setdefault("accel", vm.Accel.TCG)
    kwargs.setdefault("workdir", fake["work"])
    return vm.boot(fake["image"], **kwargs)


def test_qemu_stops_as_soon_as_every_pattern_showed(fake: dict[str, Any]) -> None:
    fake["script"] = [b"GRUB\n", b"Linux version 6.1\n", b"debian login: ", b"never read\n"]
    events: list[dict[str, Any]] = []
    report = boot(
        fake, expect=["Linux version", "login:"], timeout=30, events=Events(events.append)
    )
    assert report.passed
    assert report.outcome == vm.Outcome.MATCHED
    (qemu,) = fake["qemus"]
    assert qemu.stopped
    assert qemu.script == [b"never read\n"]
    assert report.tail == ["GRUB", "Linux version 6.1", "debian login: "]
    assert [e["line"] for e in events if e["event"] == "log"] == ["GRUB", "Linux version 6.1"]
    assert [e["pattern"] for e in events if e["event"] == "match"] == ["Linux version", "login:"]
    # The image went behind an overlay in the work directory, which is gone now.
    (create,) = fake["commands"]
    assert create[:8] == ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]
    assert create[8] == str(fake["image"])
    assert f"file={create[9]},format=qcow2" in " ".join(qemu.argv)
    assert list(fake["work"].iterdir()) == []


def test_a_timeout_reports_the_tail(fake: dict[str, Any]) -> None:
    fake["script"] = [b"GRUB loading\n", b"waiting"]
    report = boot(fake, expect=["login:"], timeout=0.2)
    assert not report.passed
    assert report.outcome == vm.Outcome.TIMEOUT
    assert report.seconds >= 0.2
    assert report.tail == ["GRUB loading", "waiting"]
    assert fake["qemus"][0].stopped


def test_a_failure_pattern_ends_the_boot(fake: dict[str, Any]) -> None:
    fake["script"] = [b"Kernel panic - not syncing\n", b"login: "]
    report = boot(fake, expect=["login:"], fail_on=["Kernel panic"], timeout=30)
    assert report.outcome == vm.Outcome.FAILURE_PATTERN
    assert report.failure is not None
    assert report.failure.pattern == "Kernel panic"


def test_a_guest_that_stops_early(fake: dict[str, Any]) -> None:
    fake["script"] = [b"reboot: Power down\n", None]
    report = boot(fake, expect=["login:"], timeout=30)
    assert report.outcome == vm.Outcome.EXITED
    assert not report.passed
    assert report.tail == ["reboot: Power down"]


def test_the_last_words_before_exit_still_count(fake: dict[str, Any]) -> None:
    fake["script"] = [b"done: OK", None]
    report = boot(fake, expect=["OK"], timeout=30)
    assert report.passed


def test_nothing_expected_passes_on_power_off(fake: dict[str, Any]) -> None:
    fake["script"] = [b"bye\n", None]
    report = boot(fake, expect=[], timeout=30)
    assert report.passed
    assert report.outcome == vm.Outcome.POWERED_OFF


def test_qemu_failing_by_itself_is_a_command_error(fake: dict[str, Any]) -> None:
    fake["script"] = [None]
    fake["status"] = 1
    with pytest.raises(CommandError, match="could not open disk"):
        boot(fake, expect=["login:"], timeout=30)
    assert list(fake["work"].iterdir()) == []


def test_an_iso_needs_no_overlay(fake: dict[str, Any], tmp_path: Path) -> None:
    fake["fmt"] = "raw"
    fake["image"] = tmp_path / "live.iso"
    fake["image"].write_bytes(bytes(0x8001) + b"CD001" + bytes(100))
    fake["script"] = [b"login: "]
    report = boot(fake, timeout=30)
    assert report.passed
    assert fake["commands"] == []
    assert "media=cdrom,readonly=on" in " ".join(fake["qemus"][0].argv)


def test_uefi_gets_a_private_copy_of_the_variables(
    fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, bytes] = {}

    def check(argv: list[str], **kwargs: Any) -> FakeQemu:
        vars_drive = next(a for a in argv if a.startswith("if=pflash,format=raw,unit=1,"))
        path = Path(vars_drive.split("file=", 1)[1])
        seen["vars"] = path.read_bytes()
        seen["dir"] = str(path.parent)
        return FakeQemu(argv, [b"login: "], 0, kwargs)

    monkeypatch.setattr(osbake_run, "start", check)
    report = boot(fake, firmware=vm.Firmware.UEFI_SECUREBOOT, timeout=30)
    assert report.passed
    assert seen["vars"] == b"OVMF_VARS_4M.ms.fd"
    assert seen["dir"].startswith(str(fake["work"]))


def test_the_console_log_is_kept_where_asked(fake: dict[str, Any], tmp_path: Path) -> None:
    fake["script"] = [b"\x1b[1mlogin: "]
    log = tmp_path / "logs" / "console.log"
    report = boot(fake, timeout=30, log_path=log)
    assert report.console_log == log
    assert log.read_bytes() == b"\x1b[1mlogin: "


def test_interactive_gives_qemu_the_terminal(fake: dict[str, Any]) -> None:
    report = boot(fake, interactive=True, expect=["ignored("], timeout=30)
    (qemu,) = fake["qemus"]
    assert qemu.kwargs["terminal"] is True
    assert report.outcome == vm.Outcome.INTERACTIVE
    assert report.passed
    assert "stdio,id=console,mux=on,signal=off" in " ".join(qemu.argv)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expect": ["[unclosed"]}, "--expect '\\[unclosed' is not a valid regular expression"),
        ({"fail_on": ["(?P<"]}, "--fail-on"),
        ({"timeout": 0}, "--timeout 0 must be more than 0 seconds"),
        ({"memory": 16}, "--mem 16 MiB is too little"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(
    fake: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        boot(fake, **kwargs)
    assert fake["qemus"] == []
    assert fake["commands"] == []


def test_another_architecture_boots_its_own_machine_under_tcg(
    fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aavmf = tmp_path / "aavmf"
    aavmf.mkdir()
    for name in ("AAVMF_CODE.fd", "AAVMF_VARS.fd"):
        (aavmf / name).write_bytes(name.encode())
    monkeypatch.setenv("OSBAKE_AAVMF_DIR", str(aavmf))
    monkeypatch.setattr(vm_qemu, "host_arch", lambda: Arch.AMD64)
    monkeypatch.setattr(runner, "host_arch", lambda: Arch.AMD64)
    monkeypatch.setattr(runner, "choose_accelerator", lambda events=None: pytest.fail("probed"))
    fake["script"] = [b"login: "]
    report = vm.boot(
        fake["image"], arch=Arch.ARM64, firmware=vm.Firmware.UEFI, workdir=fake["work"], timeout=30
    )
    assert report.passed
    assert report.accelerator == vm.Accel.TCG
    (qemu,) = fake["qemus"]
    assert qemu.argv[0] == "/usr/bin/qemu-system-aarch64"
    assert qemu.argv[qemu.argv.index("-machine") + 1] == "virt"
    with pytest.raises(UsageError, match="KVM cannot run arm64 guests"):
        boot(fake, arch=Arch.ARM64, firmware=vm.Firmware.UEFI, accel=vm.Accel.KVM)
    with pytest.raises(UsageError, match="cannot boot arm64 images with bios"):
        boot(fake, arch=Arch.ARM64)
