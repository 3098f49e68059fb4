"""Booting an image under QEMU and watching its serial console until it proves itself.

`boot()` starts QEMU with the image behind a throw-away copy-on-write overlay (the
image file is never written), captures the first serial port to a log, and
matches the console against the expected patterns as the lines come in. It
stops QEMU as soon as every pattern was seen, or at the timeout, and returns a
`BootReport`. Nothing outlives the call: QEMU runs in its own process group,
dies with the thread that started it, and the overlay lives in a temporary
directory that is removed at the end.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from osbake import run
from osbake.arch import Arch, Firmware
from osbake.errors import CommandError, HostError, UsageError
from osbake.events import Events, null_events
from osbake.vm.accel import (
    _KVM_FAILURE,
    KVM_EARLY_EXIT_SECONDS,
    KVM_SILENCE_SECONDS,
    KvmFailed,
    _remember_tcg,
    choose_accelerator,
)
from osbake.vm.console import ConsoleWatcher, PatternResult, compile_patterns
from osbake.vm.firmware import DEFAULT_ARCH, check_firmware, firmware_files, uboot_image
from osbake.vm.hardware import Hardware, HardwareChoice, Nic
from osbake.vm.hardware import check as check_hardware
from osbake.vm.media import (
    CdromBus,
    Drive,
    MediaKind,
    SeedBus,
    cdrom_on_scsi,
    create_overlay,
    prepare_image,
    prepare_seed_drive,
)
from osbake.vm.qemu import (
    DEFAULT_MEMORY,
    Accel,
    Machine,
    TcgThreads,
    _tcg_threads,
    default_cpus,
    host_arch,
    qemu_argv,
    qemu_of,
)
from osbake.vm.report import BootReport, Outcome
from osbake.vm.workspace import workspace

DEFAULT_EXPECT = ("login:",)
DEFAULT_TIMEOUT = 300.0
POLL_SECONDS = 0.05


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


def boot(
    image: Path,
    *,
    firmware: Firmware = Firmware.BIOS,
    seed: Path | None = None,
    seed_bus: SeedBus = SeedBus.DISK,
    cdrom_bus: CdromBus = CdromBus.AUTO,
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
    user_net: Sequence[str] = (),
    tcg_threads: TcgThreads | None = None,
    arch: Arch = DEFAULT_ARCH,
    hardware: Hardware | HardwareChoice | None = None,
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

    `extra_args` go at the end of QEMU's command line, `user_net` are options added to
    its user network (`-nic user,...`), e.g. a metadata service's net= and guestfwd=.

    `arch` is the image's architecture: its QEMU machine comes from osbake.arch and
    its firmware files from osbake.vm.firmware. KVM runs only the host's own
    architecture; another one is emulated with TCG.

    `hardware` is the NIC and the boot disk's bus (default: virtio for both); a
    `HardwareChoice` is resolved against the image's format (`--hardware target`).

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
    arch = Arch(arch)
    qemu = run.require_tool(qemu_of(arch).binary)
    run.require_tool("qemu-img")
    files = firmware_files(firmware, arch)
    if files is not None:
        check_firmware(files, arch)
    uboot_image(firmware, arch)  # U-Boot's file, when it boots the machine
    if log_path is not None:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    forced = accel is not None or bool(os.environ.get("OSBAKE_ACCEL", "").strip())
    if arch != host_arch():
        if accel == Accel.KVM:
            raise UsageError(
                f"KVM cannot run {arch} guests on this {os.uname().machine} host",
                hint="boot with --accel tcg, or leave --accel out",
            )
        chosen = Accel.TCG
    else:
        chosen = accel or choose_accelerator(events)
    notes: list[str] = []

    with workspace(workdir) as tmp:
        media = prepare_image(image, tmp, events)
        devices = _devices(hardware, media.format, arch, firmware, user_net)
        seed_drive = None
        if seed is not None:
            seed_drive = prepare_seed_drive(Path(seed), SeedBus(seed_bus), events)
        while True:
            attempt = tmp / f"attempt-{chosen}"
            attempt.mkdir()
            scsi = media.kind == MediaKind.CDROM and cdrom_on_scsi(media.path, cdrom_bus)
            drives = [Drive(media, boot=True, scsi=scsi)]
            if media.kind == MediaKind.DISK:
                # A fresh overlay for each attempt: a failed KVM boot may have written.
                drives = [
                    Drive(create_overlay(media, attempt / "overlay.qcow2", events), boot=True)
                ]
            if seed_drive is not None:
                drives.append(seed_drive)
            vars_file = None
            if files is not None:
                vars_file = attempt / files.vars_template.name
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
                user_net=list(user_net),
                tcg_threads=_tcg_threads(chosen, cpus or default_cpus(chosen), tcg_threads),
                arch=arch,
                hardware=devices,
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
                nic=str(devices.nic),
                disk_bus=str(devices.disk_bus),
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


def _devices(
    hardware: Hardware | HardwareChoice | None,
    qemu_format: str,
    arch: Arch,
    firmware: Firmware,
    user_net: Sequence[str],
) -> Hardware:
    if isinstance(hardware, HardwareChoice):
        hardware = hardware.resolve(qemu_format)
    devices = hardware or Hardware()
    check_hardware(devices, arch, firmware)
    if devices.nic == Nic.NONE and user_net:
        raise UsageError(
            "--nic none gives the guest no network, so a metadata service cannot reach it",
            hint="pick a network card (e.g. --nic virtio), or a seed (--datasource nocloud)",
        )
    return devices


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
        arch=machine.arch,
        hardware=machine.hardware,
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
        arch=machine.arch,
        hardware=machine.hardware,
    )
