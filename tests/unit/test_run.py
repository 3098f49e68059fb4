from __future__ import annotations

import signal
import sys
import time

import pytest

from osbake import run as runner
from osbake.errors import CommandError, HostError
from osbake.events import Events

pytestmark = pytest.mark.real_subprocess


def test_output_lines_become_events() -> None:
    seen: list[dict[str, object]] = []
    events = Events(seen.append)
    runner.run(["sh", "-c", "echo one; echo two >&2"], events=events)
    kinds = [(e["event"], e.get("line")) for e in seen]
    assert kinds[0][0] == "command"
    assert ("log", "one") in kinds and ("log", "two") in kinds


def test_failure_carries_the_tail() -> None:
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "for i in $(seq 1 40); do echo line$i; done; exit 3"])
    assert info.value.returncode == 3
    assert info.value.tail[-1] == "line40"
    assert len(info.value.tail) == runner.TAIL_LINES
    assert "exited with status 3" in info.value.message


def test_capture_keeps_stdout_apart() -> None:
    result = runner.run(["sh", "-c", "echo data; echo noise >&2"], capture=True)
    assert result.text == "data\n"
    assert result.tail == ["noise"]


def test_missing_tool_says_which_package() -> None:
    with pytest.raises(HostError) as info:
        runner.require_tool("definitely-not-a-tool-osbake")
    assert "apt-get install" in (info.value.hint or "")


def test_background_child_holding_output_does_not_hang() -> None:
    started = time.monotonic()
    runner.run(["sh", "-c", "sleep 30 & echo started"])
    assert time.monotonic() - started < 10


def test_command_line_is_copy_pasteable() -> None:
    assert (
        runner.command_line(["echo", "a b", "c'd"], {"X": "1 2"})
        == "X='1 2' echo 'a b' 'c'\"'\"'d'"
    )


def test_peak_memory_of_a_command_tree_is_measured_and_reset() -> None:
    runner.reset_peak_memory()
    runner.run(["true"])
    small = runner.peak_memory_kib()
    # A grandchild that holds 64 MiB: its peak reaches the command that started it.
    python = sys.executable
    grab = "x = bytearray(64 << 20); x[::4096] = b'1' * len(x[::4096])"
    runner.run(["sh", "-c", f'"{python}" -c "{grab}"; true'])
    assert runner.peak_memory_kib() >= 64 * 1024 > small
    runner.reset_peak_memory()
    assert runner.peak_memory_kib() == 0


def test_failed_command_status_is_kept_when_measuring_memory() -> None:
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "kill -TERM $$"])
    assert info.value.returncode == -signal.SIGTERM
