"""How a boot ends: timeout with the console's tail, power-off, failure patterns, events."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from osbake import vm
from osbake.errors import BootError
from osbake.events import Events
from tests.integration.boot_media import GRUB_BODY, MARKER, grub_iso

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {
        "waits": grub_iso(folder / "waits.iso"),
        # GRUB's halt powers the machine off (ACPI), so QEMU exits by itself.
        "halts": grub_iso(folder / "halts.iso", GRUB_BODY + "halt\n"),
    }


def test_a_pattern_that_never_shows_times_out_with_the_tail(
    media: dict[str, Path], tmp_path: Path
) -> None:
    log = tmp_path / "console.log"
    started = time.monotonic()
    report = vm.boot(media["waits"], expect=[MARKER, "NEVER-PRINTED"], timeout=6, log_path=log)
    assert time.monotonic() - started < 30
    assert not report.passed
    assert report.outcome == vm.Outcome.TIMEOUT
    assert report.seconds >= 6
    assert [p.matched for p in report.patterns] == [True, False]
    assert report.tail[-1] == MARKER
    with pytest.raises(BootError) as caught:
        report.check()
    message = caught.value.render()
    assert "'NEVER-PRINTED' did not show within 6s" in message
    assert f"| {MARKER}" in message
    assert str(log) in message


def test_patterns_match_in_order(media: dict[str, Path]) -> None:
    # The marker comes after "osbake test media": asked the other way round, the
    # second pattern would have to show again after the marker.
    report = vm.boot(media["waits"], expect=[MARKER, "osbake test media"], timeout=5)
    assert report.outcome == vm.Outcome.TIMEOUT
    assert [p.matched for p in report.patterns] == [True, False]


def test_a_guest_that_powers_off_passes_when_nothing_is_expected(media: dict[str, Path]) -> None:
    report = vm.boot(media["halts"], expect=[], timeout=60)
    report.check()
    assert report.outcome == vm.Outcome.POWERED_OFF
    assert report.qemu_status == 0


def test_a_guest_that_powers_off_before_the_pattern_fails_at_once(
    media: dict[str, Path],
) -> None:
    report = vm.boot(media["halts"], expect=["NEVER-PRINTED"], timeout=120)
    assert report.outcome == vm.Outcome.EXITED
    assert report.seconds < 60
    assert MARKER in report.tail
    with pytest.raises(BootError, match="the guest powered off"):
        report.check()


def test_events_carry_console_lines_and_progress(media: dict[str, Path]) -> None:
    seen: list[dict[str, object]] = []
    report = vm.boot(
        media["waits"], expect=["osbake test media", MARKER], timeout=60, events=Events(seen.append)
    )
    report.check()
    kinds = [e["event"] for e in seen]
    assert kinds[0] != "log"
    assert "machine" in kinds
    assert "step" in kinds
    assert kinds[-1] == "result"
    lines = [e["line"] for e in seen if e["event"] == "log"]
    assert "osbake test media" in lines
    progress = [(e["done"], e["total"]) for e in seen if e["event"] == "progress"]
    assert progress == [(0, 2), (1, 2), (2, 2)]
    commands = [str(e["line"]) for e in seen if e["event"] == "command"]
    assert not any(c.startswith("qemu-img create") for c in commands)  # an ISO needs no overlay
    assert any("qemu-system-x86_64" in c for c in commands)
