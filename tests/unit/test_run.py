from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

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


@pytest.mark.parametrize(
    ("tool", "package"),
    [("debugfs", "e2fsprogs"), ("btrfs", "btrfs-progs"), ("prlimit", "util-linux"),
     ("mmd", "mtools"), ("xorriso", "xorriso"), ("mksquashfs", "squashfs-tools")],
)  # fmt: skip
def test_a_missing_tool_names_the_package_it_comes_in(
    tool: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "which", lambda name: None)
    with pytest.raises(HostError) as info:
        runner.require_tool(tool)
    assert f"'{tool}' is not installed" in info.value.message
    assert f"apt-get install {package}'" in (info.value.hint or "")


def test_background_child_holding_output_does_not_hang() -> None:
    started = time.monotonic()
    runner.run(["sh", "-c", "sleep 30 & echo started"])
    assert time.monotonic() - started < 10


def test_command_line_is_copy_pasteable() -> None:
    assert (
        runner.command_line(["echo", "a b", "c'd"], {"X": "1 2"})
        == "X='1 2' echo 'a b' 'c'\"'\"'d'"
    )


GRAB = "x = bytearray(96 << 20)\nx[::4096] = b'1' * len(x[::4096])\n"
MEASURE = """
import sys
from osbake import run
run.run(["true"])
small = run.peak_memory_kib()
# A grandchild holding 96 MiB: its peak reaches the command that started it.
run.run(["sh", "-c", '"$0" "$1"; true', sys.executable, sys.argv[1]])
big = run.peak_memory_kib()
run.reset_peak_memory()
print(small, big, run.peak_memory_kib())
"""


def test_peak_memory_of_a_command_tree_is_measured_and_reset(tmp_path: Path) -> None:
    # In a small process of its own: Linux counts the memory a command shared with
    # its parent before exec, and pytest's own is large.
    grab = tmp_path / "grab.py"
    grab.write_text(GRAB)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(grab)], capture_output=True, text=True, check=True
    ).stdout
    small, big, reset = (int(n) for n in out.split())
    assert small < 80 * 1024 < 96 * 1024 <= big
    assert reset == 0


def test_failed_command_status_is_kept_when_measuring_memory() -> None:
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "kill -TERM $$"])
    assert info.value.returncode == -signal.SIGTERM
