"""What a boot showed: the outcome, the patterns seen, the console's tail."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from osbake.arch import Arch, Firmware
from osbake.errors import BootError
from osbake.vm.console import PatternResult
from osbake.vm.firmware import DEFAULT_ARCH
from osbake.vm.hardware import Hardware
from osbake.vm.qemu import Accel, TcgThreads


class Outcome(StrEnum):
    """How a boot ended."""

    MATCHED = "matched"  # every expected pattern was seen
    POWERED_OFF = "powered-off"  # nothing was expected and the guest powered off
    TIMEOUT = "timeout"
    FAILURE_PATTERN = "failure-pattern"  # a --fail-on pattern was seen
    EXITED = "exited"  # QEMU stopped (the guest powered off) before all patterns
    INTERACTIVE = "interactive"


@dataclass(frozen=True)
class BootReport:
    """What a boot showed."""

    image: Path
    firmware: Firmware
    accelerator: Accel
    passed: bool
    outcome: Outcome
    seconds: float
    patterns: list[PatternResult]
    tail: list[str]
    console_log: Path | None
    failure: PatternResult | None = None
    qemu_status: int | None = None
    qemu_messages: list[str] = field(default_factory=list)  # the end of QEMU's stderr
    cpus: int = 1
    tcg_threads: TcgThreads | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why KVM was given up for TCG
    arch: Arch = DEFAULT_ARCH
    hardware: Hardware = field(default_factory=Hardware)

    @property
    def machine(self) -> str:
        """The accelerator and vCPUs, as one phrase: 'tcg (thread=single), 2 vCPUs'."""
        accel = str(self.accelerator)
        if self.accelerator == Accel.TCG and self.tcg_threads is not None:
            accel += f" (thread={self.tcg_threads})"
        return f"{accel}, {self.cpus} vCPU" + ("s" if self.cpus != 1 else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "firmware": str(self.firmware),
            "accelerator": str(self.accelerator),
            "cpus": self.cpus,
            "tcg_threads": str(self.tcg_threads) if self.tcg_threads else None,
            "notes": self.notes,
            "passed": self.passed,
            "outcome": str(self.outcome),
            "seconds": self.seconds,
            "patterns": [p.to_json() for p in self.patterns],
            "failure": self.failure.to_json() if self.failure else None,
            "tail": self.tail,
            "console_log": str(self.console_log) if self.console_log else None,
            "qemu_status": self.qemu_status,
            "qemu_messages": self.qemu_messages,
            "nic": str(self.hardware.nic),
            "disk_bus": str(self.hardware.disk_bus),
        }

    def describe(self) -> str:
        """One line: what happened."""
        devices = "" if self.hardware == Hardware() else f", {self.hardware.describe()}"
        what = f"{self.image.name} ({self.firmware}, {self.accelerator}{devices})"
        seen = ", ".join(
            f"'{p.pattern}' after {p.seconds:.1f}s" for p in self.patterns if p.matched
        )
        missing = ", ".join(f"'{p.pattern}'" for p in self.patterns if not p.matched)
        if self.outcome == Outcome.MATCHED:
            return f"{what} booted: {seen}" if seen else f"{what} booted"
        if self.outcome == Outcome.POWERED_OFF:
            return f"{what} ran and powered off after {self.seconds:.1f}s"
        if self.outcome == Outcome.INTERACTIVE:
            return f"{what}: interactive session ended (QEMU status {self.qemu_status})"
        if self.outcome == Outcome.FAILURE_PATTERN and self.failure is not None:
            why = (
                f"the console showed '{self.failure.pattern}' (a failure pattern) "
                f"after {self.failure.seconds or 0:.1f}s"
            )
        elif self.outcome == Outcome.EXITED:
            why = f"QEMU stopped after {self.seconds:.1f}s (the guest powered off)"
            if missing:
                why += f" before {missing} showed"
        else:
            why = f"{missing or 'the end'} did not show within {self.seconds:.0f}s"
        done = f"; seen: {seen}" if seen else ""
        return f"{what} failed: {why}{done}"

    def check(self) -> None:
        """Raise BootError (with the console's tail) unless the boot passed."""
        if self.passed:
            return
        text = self.describe()
        if self.tail:
            text += f"\n  last {len(self.tail)} lines of the console:\n" + "\n".join(
                f"    | {line}" for line in self.tail
            )
        else:
            text += "\n  the console stayed empty"
        text += "".join(f"\n  note: {note}" for note in self.notes)
        if self.outcome == Outcome.EXITED and self.qemu_messages:
            text += "\n  QEMU said:\n" + "\n".join(f"    | {m}" for m in self.qemu_messages)
        if self.console_log is not None:
            hint = f"the whole console is in {self.console_log}"
        else:
            hint = "pass a console log path to keep the whole console"
        if self.outcome == Outcome.TIMEOUT and self.accelerator == Accel.TCG:
            hint += "; without KVM (TCG) a boot is several times slower: raise the timeout"
        elif self.outcome == Outcome.TIMEOUT and not self.tail:
            hint += (
                "; an empty console means no bootloader or kernel wrote to "
                + self.arch.info.console
            )
        raise BootError(text, hint=hint)
