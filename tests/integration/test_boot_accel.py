"""The KVM probe: quick, never hangs, and right about whether KVM boots."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from osbake import vm
from tests.integration.boot_media import MARKER, grub_iso

pytestmark = pytest.mark.integration


def test_the_probe_answers_within_its_time_limit() -> None:
    started = time.monotonic()
    works = vm.kvm_works(seconds=3.0)
    # 3 s of probing, then at most a second for QEMU to stop after SIGTERM.
    assert time.monotonic() - started < 3.0 + 2.5
    assert isinstance(works, bool)


def test_the_probe_agrees_with_real_boots(tmp_path: Path) -> None:
    iso = grub_iso(tmp_path / "grub.iso")
    if vm.kvm_works():
        # KVM works here: it must boot the test media as well as TCG does.
        vm.boot(iso, accel=vm.Accel.KVM, expect=[MARKER], timeout=30).check()
        return
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm: the probe said no without starting QEMU")
    # KVM is present but useless (this project's build host: guests crawl or hang).
    # TCG boots the media in a second or two; KVM must not get there in 10.
    tcg = vm.boot(iso, accel=vm.Accel.TCG, expect=[MARKER], timeout=30)
    tcg.check()
    kvm = vm.boot(iso, accel=vm.Accel.KVM, expect=[MARKER], timeout=10)
    assert not kvm.passed, f"KVM booted in {kvm.seconds}s although the probe said no"


def test_the_choice_is_made_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSBAKE_ACCEL", raising=False)
    vm._reset_accelerator_cache()
    first = vm.choose_accelerator()
    started = time.monotonic()
    assert vm.choose_accelerator() == first
    assert time.monotonic() - started < 0.1
