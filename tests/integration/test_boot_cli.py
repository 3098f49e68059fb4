"""The `osbake boot` command: exit codes, messages, JSON, and nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osbake import vm
from tests.integration.boot_media import MARKER, grub_iso

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grub_iso(tmp_path_factory.mktemp("media") / "grub.iso")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # Probe once here rather than once per command; TMPDIR shows what a boot leaves.
    tmp = tmp_path_factory.mktemp("tmpdir")
    return {**os.environ, "OSBAKE_ACCEL": str(vm.choose_accelerator()), "TMPDIR": str(tmp)}


def osbake(*args: str, env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", "boot", *args],
        capture_output=True, text=True, env=env, timeout=180, check=False, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def leftovers(env: dict[str, str]) -> list[str]:
    return sorted(p.name for p in Path(env["TMPDIR"]).iterdir())


def test_a_boot_that_shows_the_pattern_exits_0(iso: Path, env: dict[str, str]) -> None:
    result = osbake(str(iso), "--expect", MARKER, "--console-log", "", env=env)
    assert result.returncode == 0, result.stderr
    assert f"'{MARKER}' after" in result.stdout
    assert "console log" not in result.stdout
    assert not (iso.parent / f"{iso.name}.console.log").exists()
    assert leftovers(env) == []


def test_the_default_console_log_is_beside_the_image(
    iso: Path, env: dict[str, str], tmp_path: Path
) -> None:
    image = tmp_path / "copy.iso"
    shutil.copyfile(iso, image)
    result = osbake(str(image), "--expect", MARKER, env=env)
    assert result.returncode == 0, result.stderr
    log = tmp_path / "copy.iso.console.log"
    assert MARKER in log.read_text(errors="replace")
    assert f"console log: {log}" in result.stdout


def test_json_prints_events_and_the_report(iso: Path, env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    result = osbake(
        str(iso), "--expect", "osbake test media", "--expect", MARKER,
        "--console-log", str(log), "--json", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    report = lines[-1]
    assert report["event"] == "report"
    assert report["passed"] is True
    assert report["accelerator"] == env["OSBAKE_ACCEL"]
    assert [p["matched"] for p in report["patterns"]] == [True, True]
    assert report["console_log"] == str(log)
    assert any(e["event"] == "log" and e["line"] == MARKER for e in lines)


def test_a_boot_that_times_out_exits_1_with_the_tail(iso: Path, env: dict[str, str]) -> None:
    result = osbake(
        str(iso), "--expect", "NEVER-PRINTED", "--timeout", "4", "--console-log", "", env=env
    )
    assert result.returncode == 1
    assert "'NEVER-PRINTED' did not show within 4s" in result.stderr
    assert f"| {MARKER}" in result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(env) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expect", "("], "--expect '(' is not a valid regular expression"),
        (["--mem", "lots"], "--mem 'lots' is not a memory size"),
        (["--interactive", "--expect", "x"], "--interactive gives the console to you"),
        (["--seed", "/nonexistent/seed.iso"], "--seed: /nonexistent/seed.iso does not exist"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    iso: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    result = osbake(str(iso), *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "hint:" in result.stderr or "--interactive" in message
    assert "Traceback" not in result.stderr


def test_a_missing_image_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    result = osbake(str(tmp_path / "none.qcow2"), env=env)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def _qemu_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and exe.endswith("qemu-system-x86_64"):
            found.append(int(entry.name))
    return found


def _wait_for(condition, seconds: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _start_boot(iso: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "osbake", "boot", str(iso), "--expect", "NEVER-PRINTED",
         "--timeout", "120", "--console-log", ""],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert _wait_for(lambda: bool(_qemu_children(proc.pid))), "QEMU did not start"
    return proc, _qemu_children(proc.pid)[0]


def test_sigterm_stops_qemu_and_removes_the_overlay(iso: Path, env: dict[str, str]) -> None:
    proc, qemu = _start_boot(iso, env)
    assert leftovers(env)  # the work directory exists while it runs
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert not Path(f"/proc/{qemu}").exists()
    assert leftovers(env) == []


def test_qemu_dies_when_osbake_is_killed(iso: Path, env: dict[str, str]) -> None:
    proc, qemu = _start_boot(iso, env)
    proc.kill()
    proc.wait(timeout=10)
    assert _wait_for(lambda: not Path(f"/proc/{qemu}").exists(), 10), "QEMU outlived osbake"
    # SIGKILL leaves the work directory; the next boot removes it.
    assert leftovers(env)
    result = osbake(str(iso), "--expect", MARKER, "--console-log", "", env=env)
    assert result.returncode == 0, result.stderr
    assert leftovers(env) == []


def test_interactive_puts_the_console_on_the_terminal(
    iso: Path, env: dict[str, str], tmp_path: Path
) -> None:
    # script(1) gives osbake a terminal; Ctrl-A X quits QEMU.
    log = tmp_path / "console.log"
    command = f"{sys.executable} -m osbake boot {iso} --interactive --console-log {log}"
    proc = subprocess.Popen(
        ["script", "-qec", command, "/dev/null"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        assert _wait_for(lambda: log.is_file() and MARKER in log.read_text(errors="replace"))
        proc.stdin.write(b"\x01x")
        proc.stdin.flush()
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert MARKER.encode() in output
