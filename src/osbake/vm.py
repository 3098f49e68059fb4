"""The QEMU runner: boot an image and watch its serial console.

`boot()` starts QEMU with the image behind a throw-away copy-on-write overlay (the
image file is never written), captures the first serial port to a log, and
matches the console against the expected patterns as the lines come in. It
stops QEMU as soon as every pattern was seen, or at the timeout, and returns a
`BootReport`. Nothing outlives the call: QEMU runs in its own process group,
dies with the thread that started it, and the overlay lives in a temporary
directory that is removed at the end.

KVM is used when a short probe shows that it runs guest code at a useful speed;
otherwise (no /dev/kvm, or a KVM whose guests crawl or hang, as on some nested
hosts) QEMU emulates the CPU with TCG. `OSBAKE_ACCEL=kvm|tcg` skips the probe.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from osbake import run
from osbake.errors import ArtifactError, BootError, CommandError, HostError, UsageError
from osbake.events import Events, null_events

QEMU = "qemu-system-x86_64"
DEFAULT_EXPECT = ("login:",)
DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY = 1024  # MiB
TAIL_LINES = 40
POLL_SECONDS = 0.05
# A line longer than this (a guest that never sends a newline) is cut into pieces.
MAX_LINE = 64 * 1024


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    UEFI_SECUREBOOT = "uefi-secureboot"


class Accel(StrEnum):
    KVM = "kvm"
    TCG = "tcg"


class TcgThreads(StrEnum):
    """How QEMU runs the vCPUs of an emulated (TCG) machine."""

    SINGLE = "single"  # one host thread takes turns between the vCPUs
    MULTI = "multi"  # a host thread per vCPU (MTTCG)


class Outcome(StrEnum):
    """How a boot ended."""

    MATCHED = "matched"  # every expected pattern was seen
    POWERED_OFF = "powered-off"  # nothing was expected and the guest powered off
    TIMEOUT = "timeout"
    FAILURE_PATTERN = "failure-pattern"  # a --fail-on pattern was seen
    EXITED = "exited"  # QEMU stopped (the guest powered off) before all patterns
    INTERACTIVE = "interactive"


class MediaKind(StrEnum):
    DISK = "disk"
    CDROM = "cdrom"


class SeedBus(StrEnum):
    """How a seed file is attached: a read-only virtio disk, or a CD-ROM drive."""

    DISK = "disk"
    CDROM = "cdrom"


# -- firmware ----------------------------------------------------------------------------------

# Debian 12's ovmf package (see /usr/share/doc/ovmf/README.Debian): the 4 MiB builds.
# The .secboot code needs SMM; the .ms variable store has Debian's PK, Microsoft's
# KEK and db keys enrolled and Secure Boot switched on.
OVMF_DIR = Path("/usr/share/OVMF")


@dataclass(frozen=True)
class FirmwareFiles:
    code: Path
    vars_template: Path
    secure_boot: bool


def firmware_files(firmware: Firmware) -> FirmwareFiles | None:
    """The OVMF code and variable template of a UEFI firmware (None for BIOS)."""
    base = Path(os.environ.get("OSBAKE_OVMF_DIR", str(OVMF_DIR)))
    if firmware == Firmware.UEFI:
        return FirmwareFiles(base / "OVMF_CODE_4M.fd", base / "OVMF_VARS_4M.fd", False)
    if firmware == Firmware.UEFI_SECUREBOOT:
        return FirmwareFiles(base / "OVMF_CODE_4M.secboot.fd", base / "OVMF_VARS_4M.ms.fd", True)
    return None


def _check_firmware(files: FirmwareFiles) -> None:
    for path in (files.code, files.vars_template):
        if not path.is_file():
            raise HostError(
                f"the UEFI firmware file {path} is missing",
                hint="install it with 'apt-get install ovmf' (or run 'make setup'); "
                "OSBAKE_OVMF_DIR points osbake to another directory of OVMF_*_4M files",
            )


# -- the KVM probe -----------------------------------------------------------------------------

# A boot sector that counts to 2**24 and then writes PROBE_MARK to COM1. SeaBIOS
# and the loop take well under a second under TCG and a few milliseconds with a
# working KVM; a KVM that hangs or crawls does not get there within PROBE_SECONDS.
PROBE_MARK = b"osbake-kvm-probe-ok"
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

    The probe's machine is the one real boots get (q35, `-cpu host`, their memory,
    vCPUs and devices), so that a KVM that cannot set up that machine (an MSR it
    refuses, an assertion in QEMU's kvm.c) fails here too. A boot in which KVM fails
    anyway falls back to TCG (see `boot`).
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu = run.require_tool(QEMU)
    with workspace() as tmp:
        disk = tmp / "probe.img"
        disk.write_bytes(PROBE_SECTOR)
        console = tmp / "console"
        console.touch()
        machine = Machine(
            accel=Accel.KVM,
            firmware=Firmware.BIOS,
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


# -- media -------------------------------------------------------------------------------------

DISK_FORMATS = {"raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"}
TAR_SUFFIXES = (".tar", ".tar.xz", ".tar.gz", ".tgz", ".tar.zst", ".tar.bz2")
COMPRESSED = {
    b"\xfd7zXZ\x00": "xz",
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
}


@dataclass(frozen=True)
class Media:
    """A file QEMU attaches: its path, QEMU format name, and drive kind."""

    path: Path
    format: str
    kind: MediaKind


def _head(path: Path, size: int, offset: int = 0) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def is_iso9660(path: Path) -> bool:
    return _head(path, 5, 0x8001) == b"CD001"


def _is_tar(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES) or _head(path, 5, 257) == b"ustar"


def detect_format(path: Path, events: Events | None = None) -> str:
    """The QEMU format name of a disk image, as `qemu-img info` detects it."""
    text = run.output(
        ["qemu-img", "info", "--output=json", path],
        events=events,
        hint=f"{path} is not a disk image QEMU can read",
    )
    try:
        fmt = json.loads(text)["format"]
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"qemu-img info gave no format for {path}") from None
    return str(fmt)


def prepare_image(image: Path, workdir: Path, events: Events | None = None) -> Media:
    """What to attach for `image`: a disk in a known format, or an ISO as a CD-ROM.

    A tar archive (`.raw.tar.xz` and the like) holding one disk image is extracted
    into `workdir` first.
    """
    if not image.is_file():
        raise UsageError(
            f"the image {image} does not exist" if not image.exists() else f"{image} is not a file",
            hint="give the path of a disk image (qcow2, raw, vmdk, vhd, vhdx), an .iso, "
            "or a .raw.tar.xz",
        )
    if _is_tar(image):
        image = _extract_tar(image, workdir, events)
    head = _head(image, 6)
    for magic, name in COMPRESSED.items():
        if head.startswith(magic):
            raise ArtifactError(
                f"{image} is compressed with {name}; QEMU cannot boot it as it is",
                hint=f"decompress it first (e.g. '{name} -dk {image}'), "
                "or pass a tar archive such as .raw.tar.xz, which osbake extracts",
            )
    fmt = detect_format(image, events)
    if image.suffix.lower() == ".iso":
        return Media(image, fmt, MediaKind.CDROM)
    if fmt not in DISK_FORMATS:
        raise ArtifactError(
            f"{image} is a '{fmt}' image, which osbake does not boot",
            hint="convert it with 'qemu-img convert -O qcow2 IMAGE out.qcow2'; osbake boots "
            + ", ".join(sorted(DISK_FORMATS))
            + " and .iso files",
        )
    return Media(image, fmt, MediaKind.DISK)


def _extract_tar(archive: Path, workdir: Path, events: Events | None) -> Path:
    target = workdir / "extracted"
    target.mkdir()
    run.run(
        ["tar", "-x", "-f", archive, "-C", target, "--no-same-owner"],
        events=events,
        hint=f"{archive} is not a readable tar archive",
    )
    files = [p for p in sorted(target.rglob("*")) if p.is_file() and not p.is_symlink()]
    if len(files) != 1:
        names = ", ".join(str(p.relative_to(target)) for p in files[:5]) or "nothing"
        raise ArtifactError(
            f"{archive} holds {len(files)} files ({names}); osbake boots an archive "
            "that holds exactly one disk image",
            hint="extract it yourself and pass the disk image",
        )
    return files[0]


def prepare_seed(seed: Path, events: Events | None = None) -> Media:
    """A NoCloud/ConfigDrive seed: an ISO 9660 image or a disk image (e.g. vfat)."""
    if not seed.is_file():
        raise UsageError(
            f"--seed: {seed} " + ("is not a file" if seed.exists() else "does not exist"),
            hint="give a seed image made by 'osbake seed' (an .iso or a vfat image)",
        )
    if is_iso9660(seed):
        return Media(seed, "raw", MediaKind.CDROM)
    return Media(seed, detect_format(seed, events), MediaKind.DISK)


def create_overlay(media: Media, path: Path, events: Events | None = None) -> Media:
    """A qcow2 file that reads through to `media` and takes every write instead."""
    backing = media.path.resolve()
    run.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", media.format, "-b", backing, path],
        events=events,
        hint=f"could not create a copy-on-write overlay for {media.path}",
    )
    return Media(path, "qcow2", MediaKind.DISK)


# -- the QEMU command line ---------------------------------------------------------------------


@dataclass(frozen=True)
class Drive:
    media: Media
    readonly: bool = False
    boot: bool = False


@dataclass(frozen=True)
class Machine:
    """Everything that goes on QEMU's command line."""

    accel: Accel
    firmware: Firmware
    memory: int
    cpus: int
    drives: list[Drive]
    console_log: Path
    interactive: bool = False
    vars_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    tcg_threads: TcgThreads | None = None  # None: QEMU's default (multi on x86 hosts)


def _opt(value: str | os.PathLike[str]) -> str:
    """A value inside a QEMU option list (commas are doubled)."""
    return os.fspath(value).replace(",", ",,")


def qemu_argv(machine: Machine, qemu: str = QEMU) -> list[str]:
    """The QEMU command line for `machine`."""
    files = firmware_files(machine.firmware)
    secure = files is not None and files.secure_boot
    argv = [qemu, "-name", "osbake-boot", "-machine", "q35,smm=on" if secure else "q35"]
    accel = str(machine.accel)
    if machine.accel == Accel.TCG and machine.tcg_threads is not None:
        accel += f",thread={machine.tcg_threads}"
    argv += ["-accel", accel]
    if machine.accel == Accel.KVM:
        argv += ["-cpu", "host"]
    argv += ["-smp", str(machine.cpus), "-m", str(machine.memory)]
    # No -no-reboot: firmware and guests may reset on their way up (a first boot
    # that sets up variables, cloud-init's reboot); a power-off ends QEMU.
    argv += ["-nodefaults", "-no-user-config", "-display", "none"]
    if files is not None:
        if machine.vars_file is None:
            raise ValueError("UEFI needs a private copy of the variable store")
        if secure:
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(files.code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_opt(machine.vars_file)}",
        ]  # fmt: skip
    log = _opt(machine.console_log)
    if machine.interactive:
        # The console on this terminal (Ctrl-A X quits, Ctrl-A C is QEMU's monitor),
        # and a copy in the log.
        argv += [
            "-chardev", f"stdio,id=console,mux=on,signal=off,logfile={log}",
            "-mon", "chardev=console,mode=readline",
        ]  # fmt: skip
    else:
        argv += ["-chardev", f"file,id=console,path={log}"]
    argv += ["-serial", "chardev:console"]
    sata_cdroms = 0
    scsi = False
    # Every drive gets a boot index (the boot drive first): OVMF connects only the
    # devices in QEMU's boot order, and a seed should be visible to UEFI programs too.
    order = sorted(range(len(machine.drives)), key=lambda i: not machine.drives[i].boot)
    for index, drive in enumerate(machine.drives):
        spec = f"if=none,id=drive{index},file={_opt(drive.media.path)},format={drive.media.format}"
        boot = f",bootindex={order.index(index)}"
        if drive.media.kind == MediaKind.CDROM and drive.boot:
            # A bootable ISO gets a SATA drive: every installer and live system has
            # the AHCI driver.
            argv += ["-drive", f"{spec},media=cdrom,readonly=on"]
            argv += ["-device", f"ide-cd,drive=drive{index},bus=ide.{sata_cdroms}{boot}"]
            sata_cdroms += 1
        elif drive.media.kind == MediaKind.CDROM:
            # A seed CD-ROM sits on virtio-scsi: cloud kernels (Debian's cloud-amd64)
            # lack AHCI but have virtio-scsi and sr_mod.
            if not scsi:
                argv += ["-device", "virtio-scsi-pci,id=scsi0"]
                scsi = True
            argv += ["-drive", f"{spec},media=cdrom,readonly=on"]
            argv += ["-device", f"scsi-cd,drive=drive{index},bus=scsi0.0{boot}"]
        else:
            argv += ["-drive", spec + (",readonly=on" if drive.readonly else "")]
            argv += ["-device", f"virtio-blk-pci,drive=drive{index}{boot}"]
    argv += ["-nic", "user,model=virtio-net-pci", "-device", "virtio-rng-pci"]
    return argv + machine.extra_args


# -- watching the console ----------------------------------------------------------------------

# CSI sequences (colours, cursor moves, OVMF's ESC[=3h), OSC strings, charset
# selection and two-byte escapes.
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_])"
)
# An escape sequence cut off at the end of what has arrived so far.
_ANSI_UNFINISHED = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[()])?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_console(text: str) -> str:
    """Console text without escape sequences and control characters (tabs stay)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


@dataclass(frozen=True)
class PatternResult:
    """One expected pattern: whether and when (seconds after QEMU started) it showed."""

    pattern: str
    matched: bool = False
    seconds: float | None = None
    text: str | None = None  # the console line it matched in

    def to_json(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "matched": self.matched,
            "seconds": self.seconds,
            "text": self.text,
        }


def compile_patterns(patterns: Sequence[str], flag: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise UsageError(
                f"{flag} '{pattern}' is not a valid regular expression: {exc}",
                hint="patterns are Python regular expressions; escape special "
                "characters such as ( [ . * with a backslash",
            ) from None
    return compiled


class ConsoleWatcher:
    """Turns console bytes into clean lines and matches the patterns against them.

    Expected patterns match in order, each within one line: a pattern is searched
    in the rest of the line where the previous one matched, then in the lines after
    it. The line still being written counts too, so a prompt that waits without a
    newline (`login:`) matches. Failure patterns match anywhere, in any order.
    """

    def __init__(
        self,
        expect: Sequence[re.Pattern[str]],
        fail_on: Sequence[re.Pattern[str]] = (),
        *,
        on_line: Callable[[str], None] | None = None,
        on_match: Callable[[PatternResult, int], None] | None = None,
        tail_lines: int = TAIL_LINES,
    ) -> None:
        self._expect = list(expect)
        self._fail_on = list(fail_on)
        self._on_line = on_line
        self._on_match = on_match
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""  # raw text after the last newline
        self._pos = 0  # where in the current line the next expected pattern is searched
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.results = [PatternResult(p.pattern) for p in self._expect]
        self.failure: PatternResult | None = None

    @property
    def matched(self) -> int:
        return sum(1 for r in self.results if r.matched)

    @property
    def complete(self) -> bool:
        return self.matched == len(self.results)

    @property
    def tail(self) -> list[str]:
        """The last lines of the console, with the line still being written."""
        lines = list(self._tail)
        current = self._current()
        if current:
            lines.append(current)
        return lines[-(self._tail.maxlen or len(lines)) :]

    def feed(self, data: bytes, seconds: float) -> None:
        """Take what the console printed `seconds` after QEMU started."""
        self._partial += self._decoder.decode(data)
        while "\n" in self._partial or len(self._partial) > MAX_LINE:
            if "\n" in self._partial:
                raw, self._partial = self._partial.split("\n", 1)
            else:
                raw, self._partial = self._partial[:MAX_LINE], self._partial[MAX_LINE:]
            self._line_done(clean_console(raw), seconds)
        current = self._current()
        if current:
            self._match(current, seconds)

    def close(self, seconds: float) -> None:
        """The console ended: the unfinished line counts as a line."""
        self._partial += self._decoder.decode(b"", final=True)
        if self._partial:
            self._line_done(clean_console(self._partial), seconds)
            self._partial = ""

    def _current(self) -> str:
        return clean_console(_ANSI_UNFINISHED.sub("", self._partial))

    def _line_done(self, line: str, seconds: float) -> None:
        self._match(line, seconds)
        self._pos = 0
        self._tail.append(line)
        if self._on_line is not None:
            self._on_line(line)

    def _match(self, line: str, seconds: float) -> None:
        if self.failure is None:
            for pattern in self._fail_on:
                if pattern.search(line):
                    self.failure = PatternResult(pattern.pattern, True, round(seconds, 3), line)
                    break
        while not self.complete:
            index = self.matched
            found = self._expect[index].search(line, self._pos)
            if found is None:
                return
            # An empty match would not move on; count it once and step past it.
            self._pos = max(found.end(), self._pos + (1 if found.end() == found.start() else 0))
            result = PatternResult(self._expect[index].pattern, True, round(seconds, 3), line)
            self.results[index] = result
            if self._on_match is not None:
                self._on_match(result, index)


# -- the report --------------------------------------------------------------------------------


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
        }

    def describe(self) -> str:
        """One line: what happened."""
        what = f"{self.image.name} ({self.firmware}, {self.accelerator})"
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
            hint += "; an empty console means no bootloader or kernel wrote to ttyS0"
        raise BootError(text, hint=hint)


# -- boot --------------------------------------------------------------------------------------

WORKDIR_PREFIX = "osbake-boot-"
LOCK_FILE = "osbake.lock"


@contextlib.contextmanager
def workspace(parent: Path | None = None) -> Iterator[Path]:
    """A private temporary directory for one boot, locked while in use.

    The lock (flock, so it also holds across PID namespaces) is taken before the
    lock file gets its name; a directory whose lock is free belongs to an osbake
    that was killed, and the next boot removes it.
    """
    base = Path(parent or tempfile.gettempdir())
    sweep_stale_workdirs(base)
    folder = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=base))
    pending = folder / (LOCK_FILE + ".new")
    lock = pending.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pending.rename(folder / LOCK_FILE)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.close()


def sweep_stale_workdirs(parent: Path) -> None:
    """Remove the work directories (overlays) of boots whose osbake was killed."""
    try:
        candidates = sorted(parent.glob(WORKDIR_PREFIX + "*"))
    except OSError:
        return
    for folder in candidates:
        try:
            handle = (folder / LOCK_FILE).open("r")
        except OSError:
            continue  # being set up, or not a boot's directory
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a running boot holds it
            shutil.rmtree(folder, ignore_errors=True)


def parse_memory(text: str) -> int:
    """MiB from '1024', '512M', '2G'."""
    match = re.fullmatch(r"\s*(\d+)\s*([MmGg](?:i?[Bb])?)?\s*", text)
    if match is None:
        raise UsageError(
            f"--mem '{text}' is not a memory size",
            hint="give MiB as a number (1024) or with a unit (512M, 2G)",
        )
    value = int(match.group(1))
    if match.group(2) and match.group(2)[0] in "Gg":
        value *= 1024
    return value


def _prepare_seed_drive(seed: Path, bus: SeedBus, events: Events) -> Drive:
    media = prepare_seed(seed, events)
    if bus == SeedBus.CDROM:
        if media.kind != MediaKind.CDROM:
            raise UsageError(
                f"--seed {seed} is not an ISO 9660 image, so it cannot be a CD-ROM",
                hint="attach it as a disk (the default), or make an ISO seed",
            )
        return Drive(media, readonly=True)
    return Drive(Media(media.path, media.format, MediaKind.DISK), readonly=True)


def boot(
    image: Path,
    *,
    firmware: Firmware = Firmware.BIOS,
    seed: Path | None = None,
    seed_bus: SeedBus = SeedBus.DISK,
    expect: Sequence[str] = DEFAULT_EXPECT,
    fail_on: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    memory: int = DEFAULT_MEMORY,
    cpus: int | None = None,
    accel: Accel | None = None,
    events: Events | None = None,
    log_path: Path | None = None,
    interactive: bool = False,
    workdir: Path | None = None,
    extra_args: Sequence[str] = (),
    tcg_threads: TcgThreads | None = None,
) -> BootReport:
    """Boot `image` under QEMU and watch its serial console (see module docstring).

    The boot passes when every `expect` pattern showed on the console, in order,
    within `timeout` seconds; with no patterns, when the guest powers off by itself
    within `timeout`. A `fail_on` pattern ends the boot at once as failed.
    `log_path` keeps the raw console (else it is removed with the overlay);
    `workdir` is where the temporary directory goes (default: $TMPDIR).
    `interactive` puts the console on this terminal and ignores the patterns.

    Without `accel` (and OSBAKE_ACCEL), KVM is used when the probe says it works,
    and a boot in which KVM fails after all (QEMU aborts at the start, or the
    console stays silent) is started again with TCG; the report's notes say so.
    A KVM that was asked for and fails raises HostError.

    Without `cpus`, a TCG machine has one vCPU and a KVM machine two (one on a
    one-CPU host). Several vCPUs under TCG take turns on one host thread
    (thread=single) unless `tcg_threads` says otherwise: multi-threaded TCG hangs
    x86 guests (see docs/boot.md).

    Bad input raises UsageError/ArtifactError, a missing tool HostError, QEMU
    failing to start CommandError; a boot that does not show the patterns returns
    a report with `passed=False` (`report.check()` raises BootError).
    """
    events = events or null_events()
    image = Path(image)
    firmware = Firmware(firmware)
    expect_re = [] if interactive else compile_patterns(expect, "--expect")
    fail_re = [] if interactive else compile_patterns(fail_on, "--fail-on")
    if timeout <= 0:
        raise UsageError(f"--timeout {timeout} must be more than 0 seconds")
    if memory < 64:
        raise UsageError(f"--mem {memory} MiB is too little to boot", hint="give at least 64M")
    if cpus is not None and cpus < 1:
        raise UsageError(f"--cpus {cpus} must be at least 1")
    qemu = run.require_tool(QEMU)
    run.require_tool("qemu-img")
    files = firmware_files(firmware)
    if files is not None:
        _check_firmware(files)
    if log_path is not None:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    forced = accel is not None or bool(os.environ.get("OSBAKE_ACCEL", "").strip())
    chosen = accel or choose_accelerator(events)
    notes: list[str] = []

    with workspace(workdir) as tmp:
        media = prepare_image(image, tmp, events)
        seed_drive = None
        if seed is not None:
            seed_drive = _prepare_seed_drive(Path(seed), SeedBus(seed_bus), events)
        while True:
            attempt = tmp / f"attempt-{chosen}"
            attempt.mkdir()
            drives = [Drive(media, boot=True)]
            if media.kind == MediaKind.DISK:
                # A fresh overlay for each attempt: a failed KVM boot may have written.
                drives = [
                    Drive(create_overlay(media, attempt / "overlay.qcow2", events), boot=True)
                ]
            if seed_drive is not None:
                drives.append(seed_drive)
            vars_file = None
            if files is not None:
                vars_file = attempt / "OVMF_VARS.fd"
                shutil.copyfile(files.vars_template, vars_file)
            console = log_path or attempt / "console.log"
            console.write_bytes(b"")
            machine = Machine(
                accel=chosen,
                firmware=firmware,
                memory=memory,
                cpus=cpus or default_cpus(chosen),
                drives=drives,
                console_log=console,
                interactive=interactive,
                vars_file=vars_file,
                extra_args=list(extra_args),
                tcg_threads=_tcg_threads(chosen, cpus or default_cpus(chosen), tcg_threads),
            )
            argv = qemu_argv(machine, qemu)
            events.emit(
                "machine",
                image=str(image),
                firmware=str(firmware),
                accelerator=str(chosen),
                memory=memory,
                cpus=machine.cpus,
                tcg_threads=str(machine.tcg_threads) if machine.tcg_threads else None,
                expect=[p.pattern for p in expect_re],
                timeout=timeout,
            )
            events.step("boot")
            try:
                if interactive:
                    report = _interactive(argv, image, machine, log_path, events)
                else:
                    report = _watch(
                        argv, image, machine, expect_re, fail_re, timeout, log_path, attempt, events
                    )
            except KvmFailed as failure:
                if forced:
                    raise HostError(
                        f"KVM does not work on this host: {failure.reason}",
                        hint="boot with --accel tcg (or OSBAKE_ACCEL=tcg), or unset "
                        "OSBAKE_ACCEL to let osbake fall back to TCG by itself",
                    ) from None
                note = f"KVM failed ({failure.reason}); booted with TCG instead"
                notes.append(note)
                events.emit("accel-fallback", reason=failure.reason, accelerator=str(Accel.TCG))
                events.log(f"osbake: {note}")
                _remember_tcg()
                chosen = Accel.TCG
                continue
            report = dataclasses.replace(report, notes=notes)
            events.result("boot", report.seconds, status="done" if report.passed else "failed")
            return report


def default_cpus(accel: Accel) -> int:
    """vCPUs when none are asked for: one under TCG (see `boot`), else up to two."""
    if accel == Accel.TCG:
        return 1
    return min(2, os.cpu_count() or 1)


def _tcg_threads(accel: Accel, cpus: int, asked: TcgThreads | None) -> TcgThreads | None:
    if accel != Accel.TCG:
        return None
    if asked is not None:
        return asked
    return TcgThreads.SINGLE if cpus > 1 else None


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


def _interactive(
    argv: list[str], image: Path, machine: Machine, log_path: Path | None, events: Events
) -> BootReport:
    started = time.monotonic()
    with run.start(argv, events=events, terminal=True) as qemu:
        status = qemu.wait()
    early = time.monotonic() - started < KVM_EARLY_EXIT_SECONDS
    if machine.accel == Accel.KVM and status not in (0, None) and early:
        raise KvmFailed(f"QEMU stopped with status {status} as it started")
    return BootReport(
        image=image,
        firmware=machine.firmware,
        accelerator=machine.accel,
        passed=status == 0,
        outcome=Outcome.INTERACTIVE,
        seconds=round(time.monotonic() - started, 3),
        patterns=[],
        tail=[],
        console_log=log_path,
        qemu_status=status,
    )


def _watch(
    argv: list[str],
    image: Path,
    machine: Machine,
    expect: list[re.Pattern[str]],
    fail_on: list[re.Pattern[str]],
    timeout: float,
    log_path: Path | None,
    tmp: Path,
    events: Events,
) -> BootReport:
    total = len(expect)

    def matched(result: PatternResult, index: int) -> None:
        events.emit("match", pattern=result.pattern, seconds=result.seconds, line=result.text)
        events.progress("boot", index + 1, total)

    watcher = ConsoleWatcher(expect, fail_on, on_line=events.log, on_match=matched)
    events.progress("boot", 0, total)
    stderr_path = tmp / "qemu.stderr"
    self_exit: int | None = None
    kvm_silent = False
    heard = False

    def silent_kvm(elapsed: float) -> bool:
        """A KVM guest that has written nothing yet (only where patterns are awaited)."""
        nonlocal heard
        if heard or machine.accel != Accel.KVM or not total:
            return False
        heard = machine.console_log.stat().st_size > 0
        return not heard and elapsed > min(KVM_SILENCE_SECONDS, timeout)

    with (
        stderr_path.open("wb") as stderr,
        machine.console_log.open("rb", buffering=0) as console,
    ):
        started = time.monotonic()
        qemu = run.start(argv, events=events, stderr=stderr)
        try:
            while True:
                elapsed = time.monotonic() - started
                watcher.feed(console.readall(), elapsed)
                if watcher.failure is not None:
                    outcome = Outcome.FAILURE_PATTERN
                    break
                if total and watcher.complete:
                    outcome = Outcome.MATCHED
                    break
                self_exit = qemu.poll()
                if self_exit is not None:
                    watcher.feed(console.readall(), elapsed)
                    watcher.close(elapsed)
                    if total and watcher.complete:
                        outcome = Outcome.MATCHED
                    elif watcher.failure is not None:
                        outcome = Outcome.FAILURE_PATTERN
                    else:
                        outcome = Outcome.POWERED_OFF if not total else Outcome.EXITED
                    break
                if elapsed > timeout:
                    outcome = Outcome.TIMEOUT
                    break
                if silent_kvm(elapsed):
                    outcome = Outcome.TIMEOUT
                    kvm_silent = True
                    break
                time.sleep(POLL_SECONDS)
        finally:
            status = qemu.stop()
        seconds = round(time.monotonic() - started, 3)
    messages = stderr_path.read_text(errors="replace").splitlines()[-run.TAIL_LINES :]
    if kvm_silent:
        raise KvmFailed(f"the console stayed silent for {KVM_SILENCE_SECONDS:.0f}s")
    if machine.accel == Accel.KVM and self_exit not in (None, 0) and outcome != Outcome.MATCHED:
        said = [m for m in messages if _KVM_FAILURE.search(m)]
        if said:
            raise KvmFailed(f"QEMU stopped with status {self_exit}: {said[0].strip()}")
    if self_exit not in (None, 0) and outcome != Outcome.MATCHED:
        raise CommandError(
            qemu.argv,
            self_exit,
            messages or watcher.tail,
            hint="QEMU could not run the machine; the command line is in the events (-v)",
        )
    return BootReport(
        image=image,
        firmware=machine.firmware,
        accelerator=machine.accel,
        passed=outcome in (Outcome.MATCHED, Outcome.POWERED_OFF),
        outcome=outcome,
        seconds=seconds,
        patterns=list(watcher.results),
        tail=watcher.tail,
        console_log=log_path,
        failure=watcher.failure,
        qemu_status=status,
        qemu_messages=messages,
        cpus=machine.cpus,
        tcg_threads=machine.tcg_threads,
    )
