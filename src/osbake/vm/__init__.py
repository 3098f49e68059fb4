"""The QEMU runner: boot an image and prove it by what its serial console shows.

The parts, each a module of this package:

- `firmware`: the QEMU firmware table (UEFI files per architecture and firmware);
- `media`: the image, seed and overlay files QEMU attaches, and their drives;
- `hardware`: the NIC and disk bus of a boot, and the platform each format targets;
- `qemu`: the machine and its QEMU command line (per architecture, from osbake.arch);
- `accel`: the KVM probe, and the fall back to TCG;
- `console`: the console watcher that matches the expected patterns;
- `report`: what a boot showed;
- `workspace`: a boot's locked temporary directory;
- `runner`: `boot()`, which puts them together;
- `commands`: `osbake boot` (loaded by the CLI only).

The names below are the package's interface; the CLI, the service and the tests use
them as `vm.<name>`.
"""

from __future__ import annotations

from osbake.arch import Firmware
from osbake.vm.accel import (
    PROBE_MARK,
    PROBE_SECONDS,
    PROBE_SECTOR,
    KvmFailed,
    choose_accelerator,
    kvm_works,
)
from osbake.vm.console import (
    MAX_LINE,
    TAIL_LINES,
    ConsoleWatcher,
    PatternResult,
    clean_console,
    compile_patterns,
)
from osbake.vm.firmware import (
    DEFAULT_ARCH,
    FirmwareFiles,
    check_firmware,
    firmware_files,
)
from osbake.vm.hardware import (
    FORMAT_TARGETS,
    PLATFORMS,
    DiskBus,
    Hardware,
    HardwareChoice,
    Nic,
    Platform,
)
from osbake.vm.media import (
    COMPRESSED,
    DISK_FORMATS,
    TAR_SUFFIXES,
    CdromBus,
    Drive,
    Media,
    MediaKind,
    SeedBus,
    create_overlay,
    detect_format,
    is_iso9660,
    prepare_image,
    prepare_seed,
    prepare_seed_drive,
)
from osbake.vm.qemu import DEFAULT_MEMORY, Accel, Machine, TcgThreads, default_cpus, qemu_argv
from osbake.vm.report import BootReport, Outcome
from osbake.vm.runner import DEFAULT_EXPECT, DEFAULT_TIMEOUT, boot, parse_memory
from osbake.vm.workspace import WORKDIR_PREFIX, sweep_stale_workdirs, workspace

__all__ = [
    "COMPRESSED",
    "DEFAULT_ARCH",
    "DEFAULT_EXPECT",
    "DEFAULT_MEMORY",
    "DEFAULT_TIMEOUT",
    "DISK_FORMATS",
    "FORMAT_TARGETS",
    "MAX_LINE",
    "PLATFORMS",
    "PROBE_MARK",
    "PROBE_SECONDS",
    "PROBE_SECTOR",
    "TAIL_LINES",
    "TAR_SUFFIXES",
    "WORKDIR_PREFIX",
    "Accel",
    "BootReport",
    "CdromBus",
    "ConsoleWatcher",
    "DiskBus",
    "Drive",
    "Firmware",
    "FirmwareFiles",
    "Hardware",
    "HardwareChoice",
    "KvmFailed",
    "Machine",
    "Media",
    "MediaKind",
    "Nic",
    "Outcome",
    "PatternResult",
    "Platform",
    "SeedBus",
    "TcgThreads",
    "boot",
    "check_firmware",
    "choose_accelerator",
    "clean_console",
    "compile_patterns",
    "create_overlay",
    "default_cpus",
    "detect_format",
    "firmware_files",
    "is_iso9660",
    "kvm_works",
    "parse_memory",
    "prepare_image",
    "prepare_seed",
    "prepare_seed_drive",
    "qemu_argv",
    "sweep_stale_workdirs",
    "workspace",
]
