"""Which accelerator a boot gets: KVM when a short probe shows it works, else TCG.

KVM is used when the probe shows that it runs guest code at a useful speed;
otherwise (no /dev/kvm, or a KVM whose guests crawl or hang, as on some nested
hosts) QEMU emulates the CPU with TCG. `OSBAKE_ACCEL=kvm|tcg` skips the probe. A
boot in which KVM fails after all (`KvmFailed`) is run again with TCG, and the rest
of the process keeps to TCG.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import time

from osbake import run
from osbake.arch import Firmware
from osbake.errors import UsageError
from osbake.events import Events
from osbake.vm.firmware import DEFAULT_ARCH
from osbake.vm.media import Drive, Media, MediaKind
from osbake.vm.qemu import DEFAULT_MEMORY, Accel, Machine, default_cpus, qemu_argv, qemu_of
from osbake.vm.workspace import workspace

POLL_SECONDS = 0.05

# A boot sector that counts to 2**24 and then writes PROBE_MARK to COM1. SeaBIOS
# and the loop take well under a second under TCG and a few milliseconds with a
# working KVM; a KVM that hangs or crawls does not get there within PROBE_SECONDS.
PROBE_MARK = b"osbake-kvm-probe-ok"
PROBE_ARCH = DEFAULT_ARCH  # the boot sector is PC code, run by a BIOS
PROBE_SECONDS = 3.0
_PROBE_HEAD = [
    "fa",  # cli
    "fc",  # cld
    "31c0",  # xor ax, ax
    "8ed8",  # mov ds, ax
    "66b900000001",  # mov ecx, 0x1000000
    "6649",  # 1: dec ecx
    "75fc",  # jnz 1b
    "baf803",  # mov dx, 0x3f8 (COM1)
]
_PROBE_LOOP = [
    "ac",  # 2: lodsb
    "84c0",  # test al, al
    "7403",  # jz 3f
    "ee",  # out dx, al
    "ebf8",  # jmp 2b
    "f4",  # 3: hlt
    "ebfd",  # jmp 3b
]


def _probe_sector() -> bytes:
    head = bytes.fromhex("".join(_PROBE_HEAD))
    loop = bytes.fromhex("".join(_PROBE_LOOP))
    message_at = 0x7C00 + len(head) + 3 + len(loop)
    mov_si = b"\xbe" + struct.pack("<H", message_at)  # mov si, message
    code = head + mov_si + loop + PROBE_MARK + b"\n\0"
    return code + bytes(510 - len(code)) + b"\x55\xaa"


PROBE_SECTOR = _probe_sector()

_accel_lock = threading.Lock()
_accel_choice: dict[str, Accel] = {}  # the probe's decision, once per process


def choose_accelerator(events: Events | None = None) -> Accel:
    """KVM if the probe says it works, else TCG; decided once per process.

    `OSBAKE_ACCEL=kvm|tcg` forces the choice without a probe.
    """
    forced = os.environ.get("OSBAKE_ACCEL", "").strip().lower()
    if forced:
        try:
            return Accel(forced)
        except ValueError:
            raise UsageError(
                f"OSBAKE_ACCEL is '{forced}', which is not an accelerator",
                hint="set OSBAKE_ACCEL to 'kvm' or 'tcg', or unset it to let osbake probe",
            ) from None
    with _accel_lock:
        if "accel" not in _accel_choice:
            _accel_choice["accel"] = Accel.KVM if kvm_works(events) else Accel.TCG
        return _accel_choice["accel"]


def kvm_works(events: Events | None = None, *, seconds: float = PROBE_SECONDS) -> bool:
    """Whether a KVM guest runs the probe boot sector to its end within `seconds`.

    The probe's machine is the one real boots get (the machine type, `-cpu host`, their
    memory, vCPUs and devices), so that a KVM that cannot set up that machine (an MSR it
    refuses, an assertion in QEMU's kvm.c) fails here too. A boot in which KVM fails
    anyway falls back to TCG (see `boot`).
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu = run.require_tool(qemu_of(PROBE_ARCH).binary)
    with workspace() as tmp:
        disk = tmp / "probe.img"
        disk.write_bytes(PROBE_SECTOR)
        console = tmp / "console"
        console.touch()
        machine = Machine(
            accel=Accel.KVM,
            firmware=Firmware.BIOS,
            arch=PROBE_ARCH,
            memory=DEFAULT_MEMORY,
            cpus=default_cpus(Accel.KVM),
            drives=[Drive(Media(disk, "raw", MediaKind.DISK), readonly=True, boot=True)],
            console_log=console,
        )
        argv = [*qemu_argv(machine, qemu), "-no-reboot"]
        started = time.monotonic()
        proc = run.start(argv, events=events)
        works = False
        try:
            while time.monotonic() - started < seconds:
                if PROBE_MARK in console.read_bytes():
                    works = True
                    break
                if proc.poll() is not None:
                    break
                time.sleep(POLL_SECONDS)
        finally:
            proc.stop(grace=1.0)
        if events is not None:
            events.emit("kvm-probe", works=works, seconds=round(time.monotonic() - started, 3))
        return works


def _reset_accelerator_cache() -> None:
    """Forget the probe's decision (tests)."""
    with _accel_lock:
        _accel_choice.clear()


class KvmFailed(Exception):
    """QEMU could not run the machine with KVM (it aborted, or the guest never ran)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# QEMU's messages when KVM itself fails (an ioctl refused, an MSR KVM cannot set,
# kvm.c asserting), as opposed to a bad command line or a missing file.
_KVM_FAILURE = re.compile(
    r"kvm|KVM|failed to set MSR|failed to get MSR|vmx|svm|Could not access KVM", re.IGNORECASE
)
# With KVM, firmware and bootloader write to the console within a second or two;
# silence this long means the guest does not run (KVM hangs on some nested hosts).
KVM_SILENCE_SECONDS = 20.0
# An interactive QEMU's messages go to the terminal: a KVM machine that ends with an
# error this soon is taken as KVM failing.
KVM_EARLY_EXIT_SECONDS = 5.0


def _remember_tcg() -> None:
    """The rest of this process boots with TCG: KVM failed here once already."""
    with _accel_lock:
        _accel_choice["accel"] = Accel.TCG
