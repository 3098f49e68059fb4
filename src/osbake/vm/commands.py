"""`osbake boot`: boot an image under QEMU and check what its console shows."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from osbake import inspect, vm
from osbake.arch import Arch
from osbake.errors import OsbakeError, UsageError
from osbake.events import Event, Events, JsonLinesSink
from osbake.firstboot import datasource
from osbake.firstboot.datasource import Inputs
from osbake.firstboot.metadata import METADATA_ADDRESS, Datasource
from osbake.vm.firmware import FIRMWARE_HELP, QEMU_FIRMWARE
from osbake.vm.hardware import HARDWARE_CHOICES, DiskBus, HardwareChoice, Nic

if TYPE_CHECKING:
    from osbake.cli import CommandFactory


def register(command: CommandFactory, sub: Any) -> None:
    p = command("boot", cmd_boot, "boot an image under QEMU and watch its serial console")
    p.add_argument("image", help="disk image (qcow2, raw, vmdk, vhd, vhdx), .iso or .raw.tar.xz")
    p.add_argument(
        "--firmware",
        choices=[str(f) for f in vm.Firmware],
        help=f"{FIRMWARE_HELP}; default: the first of the image's boot modes (its manifest "
        "beside it), else bios",
    )
    p.add_argument(
        "--arch",
        choices=[str(a) for a in QEMU_FIRMWARE],
        help="the image's architecture (default: what the manifest beside it says, else "
        f"{vm.DEFAULT_ARCH}); another than this host's is emulated with TCG",
    )
    p.add_argument(
        "--hardware",
        choices=HARDWARE_CHOICES,
        help="the devices of a platform: kvm (virtio), vmware (vmxnet3, pvscsi), hyperv "
        "(tulip, ide), or target: the platform the image's format is made for (vmdk: "
        "vmware, vhd/vhdx: hyperv, else kvm); default kvm's",
    )
    p.add_argument(
        "--nic",
        choices=[str(n) for n in Nic],
        help="the network card (default: the --hardware's, virtio)",
    )
    p.add_argument(
        "--disk-bus",
        choices=[str(b) for b in DiskBus],
        help="the boot disk's bus: virtio (virtio-blk), scsi (virtio-scsi), pvscsi, sata "
        "(AHCI), nvme, ide (PIIX, on the i440fx machine); default: the --hardware's, virtio",
    )
    p.add_argument("--seed", help="attach this NoCloud/ConfigDrive seed (.iso or vfat image)")
    p.add_argument(
        "--seed-bus",
        choices=[str(b) for b in vm.SeedBus],
        default=str(vm.SeedBus.DISK),
        help="attach the seed as a read-only virtio disk (default) or as a CD-ROM (ISO only)",
    )
    p.add_argument(
        "--cdrom-bus",
        choices=[str(b) for b in vm.CdromBus],
        default=str(vm.CdromBus.AUTO),
        help="where an .iso to boot is attached: SATA, or virtio-scsi (Debian's cloud kernel "
        "has no AHCI driver); auto (default): virtio-scsi for a live ISO osbake made",
    )
    p.add_argument(
        "--datasource",
        choices=[str(d) for d in Datasource],
        help="give the guest its instance as a cloud does: a NoCloud or ConfigDrive seed "
        "made from the options below, an EC2 or OpenStack metadata service at "
        f"{METADATA_ADDRESS} (served by osbake for this boot), or none (docs/boot.md)",
    )
    p.add_argument("--hostname", metavar="H", help="with --datasource: the instance's host name")
    p.add_argument("--user", metavar="NAME", help="with --datasource: create this user (sudo)")
    p.add_argument(
        "--ssh-key",
        metavar="F",
        action="append",
        default=[],
        help="with --datasource: an ssh public key file (repeatable), for --user or the "
        "image's default user",
    )
    p.add_argument("--user-data", metavar="F", help="with --datasource: user-data")
    p.add_argument("--vendor-data", metavar="F", help="with --datasource: vendor-data")
    p.add_argument("--instance-id", metavar="ID", help="with --datasource: the instance id")
    p.add_argument(
        "--imdsv1",
        action="store_true",
        help="with --datasource ec2: also answer requests without an IMDSv2 token",
    )
    p.add_argument(
        "--expect",
        action="append",
        metavar="REGEX",
        help="a pattern the console must show; repeat for several, matched in order "
        f"(default: {' '.join(vm.DEFAULT_EXPECT)})",
    )
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="REGEX",
        help="stop and fail as soon as the console shows this (e.g. 'Kernel panic')",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=vm.DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up after S seconds (default {vm.DEFAULT_TIMEOUT:.0f})",
    )
    p.add_argument(
        "--mem",
        default=str(vm.DEFAULT_MEMORY),
        metavar="M",
        help=f"guest memory: MiB or 512M, 2G (default {vm.DEFAULT_MEMORY})",
    )
    p.add_argument(
        "--cpus",
        type=int,
        help="virtual CPUs (default: 1 under TCG; 2 with KVM, or 1 on a 1-CPU host)",
    )
    p.add_argument(
        "--accel",
        choices=[str(a) for a in vm.Accel],
        help="kvm or tcg (default: probe KVM, fall back to TCG; or OSBAKE_ACCEL)",
    )
    p.add_argument(
        "--console-log",
        metavar="FILE",
        help="keep the raw console here (default: IMAGE.console.log beside the image; "
        "'' keeps none)",
    )
    p.add_argument(
        "--interactive",
        action="store_true",
        help="put the console on this terminal (Ctrl-A X quits); no --expect",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every console line")
    p.add_argument("--json", action="store_true", help="print events and the report as JSON lines")


def cmd_boot(args: argparse.Namespace) -> int:
    if args.interactive and (args.expect or args.fail_on):
        raise UsageError(
            "--interactive gives the console to you, so --expect/--fail-on do not apply",
            hint="drop --interactive to check patterns, or drop --expect/--fail-on",
        )
    if args.cpus is not None and args.cpus < 1:
        raise UsageError(f"--cpus {args.cpus} must be at least 1")
    image = Path(args.image)
    _defaults_from_manifest(args, image)
    inputs = Inputs(
        hostname=args.hostname,
        user=args.user,
        ssh_keys=[Path(k).expanduser() for k in args.ssh_key],
        user_data=Path(args.user_data).expanduser() if args.user_data else None,
        vendor_data=Path(args.vendor_data).expanduser() if args.vendor_data else None,
        instance_id=args.instance_id,
    )
    if args.datasource is None and (inputs.given() or args.imdsv1):
        raise UsageError(
            "--hostname, --user, --ssh-key, --user-data, --vendor-data, --instance-id and "
            "--imdsv1 describe the instance a --datasource gives the guest",
            hint="add --datasource nocloud|configdrive|ec2|openstack",
        )
    if args.datasource is not None and args.seed:
        raise UsageError(
            "--seed and --datasource both give the guest its instance",
            hint="drop --seed: --datasource nocloud or configdrive makes the seed itself",
        )
    if args.console_log is None:
        log_path = _default_log(image)
    else:
        log_path = Path(args.console_log) if args.console_log else None
    events = Events()
    progress: BootProgress | None = None
    if args.json:
        events.add(JsonLinesSink(sys.stdout))
    elif not args.interactive:
        progress = BootProgress(Console(stderr=True, highlight=False), image, verbose=args.verbose)
        events.add(progress)
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        with contextlib.ExitStack() as stack:
            source = None
            if args.datasource is not None:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="osbake-ds-")))
                source = datasource.prepare(
                    args.datasource,
                    inputs,
                    tmp,
                    stack,
                    imdsv2=not args.imdsv1,
                    arch=Arch(args.arch),
                    events=events,
                )
            report = _boot(args, image, source, events, log_path)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_handler)
        if progress is not None:
            progress.stop()
    return _finish(args, report)


def _defaults_from_manifest(args: argparse.Namespace, image: Path) -> None:
    """--arch and --firmware, when not given, from the build's manifest beside the image."""
    manifest = None
    if args.arch is None or args.firmware is None:
        with contextlib.suppress(OSError, ValueError, OsbakeError):
            manifest = inspect.manifest_beside(image)
    if args.arch is None:
        known = manifest is not None and manifest.arch in {str(a) for a in QEMU_FIRMWARE}
        args.arch = manifest.arch if manifest is not None and known else str(vm.DEFAULT_ARCH)
    if args.firmware is None:
        modes = [m for m in (manifest.boot if manifest else []) if m in set(vm.Firmware)]
        args.firmware = modes[0] if modes else str(vm.Firmware.BIOS)


def _boot(
    args: argparse.Namespace,
    image: Path,
    source: datasource.BootSource | None,
    events: Events,
    log_path: Path | None,
) -> vm.BootReport:
    seed = Path(args.seed) if args.seed else None
    if source is not None:
        seed = source.seed
    return vm.boot(
        image,
        firmware=vm.Firmware(args.firmware),
        seed=seed,
        seed_bus=vm.SeedBus(args.seed_bus),
        cdrom_bus=vm.CdromBus(args.cdrom_bus),
        expect=args.expect or list(vm.DEFAULT_EXPECT),
        fail_on=args.fail_on,
        timeout=args.timeout,
        memory=vm.parse_memory(args.mem),
        cpus=args.cpus,
        accel=vm.Accel(args.accel) if args.accel else None,
        events=events,
        log_path=log_path,
        interactive=args.interactive,
        arch=Arch(args.arch),
        user_net=source.user_net if source is not None else (),
        extra_args=source.qemu_args if source is not None else (),
        hardware=HardwareChoice(args.hardware, args.nic, args.disk_bus),
    )


def _finish(args: argparse.Namespace, report: vm.BootReport) -> int:
    if args.json:
        print(json.dumps({"event": "report", **report.to_json()}, sort_keys=True), flush=True)
    if args.interactive:
        return 0 if report.qemu_status == 0 else 1
    report.check()
    if not args.json:
        out = Console(highlight=False)
        out.print(f"[green]passed:[/] {report.describe()}", soft_wrap=True)
        for note in report.notes:
            out.print(f"note: {note}", soft_wrap=True, highlight=False)
        if report.console_log is not None:
            out.print(f"console log: {report.console_log}", soft_wrap=True)
    return 0


def _terminated(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C does: QEMU is stopped and the overlay removed on the way out.
    raise KeyboardInterrupt


def _default_log(image: Path) -> Path | None:
    """IMAGE.console.log beside the image, if that directory is writable."""
    folder = image.resolve().parent
    if folder.is_dir() and os.access(folder, os.W_OK):
        return folder / f"{image.name}.console.log"
    return None


class BootProgress:
    """Renders boot events: a status line on a terminal, the console lines with -v."""

    def __init__(self, console: Console, image: Path, *, verbose: bool = False) -> None:
        self.console = console
        self.image = image
        self.verbose = verbose
        self.started: float | None = None
        self.matched = 0
        self.total = 0
        self.last_line = ""
        self.live: Live | None = None
        self.what = image.name

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        if kind == "machine":
            devices = ""
            if (event.get("nic"), event.get("disk_bus")) != ("virtio", "virtio"):
                devices = f", nic {event.get('nic')}, disk bus {event.get('disk_bus')}"
            self.what = f"{self.image.name} ({event['firmware']}, {event['accelerator']}{devices})"
        elif kind == "kvm-probe" and self.verbose:
            verdict = "works" if event["works"] else "does not run guests in time: using TCG"
            self.console.print(f"KVM probe ({event['seconds']:.1f}s): {verdict}")
        elif kind == "accel-fallback":
            self.stop()
            self.console.print(
                Text(f"KVM failed ({event['reason']}): booting with TCG instead", style="yellow"),
                soft_wrap=True,
            )
        elif kind == "command" and self.verbose:
            self.console.print(Text(f"$ {event['line']}", style="bold"), soft_wrap=True)
        elif kind == "step":
            self.started = time.monotonic()
            if self.console.is_terminal and not self.verbose:
                self.live = Live(self.render(), console=self.console, refresh_per_second=4)
                self.live.start()
            else:
                self.console.print(f"booting {self.what}")
        elif kind == "log":
            self.last_line = event["line"]
            if self.verbose:
                self.console.print(Text(event["line"]), soft_wrap=True, highlight=False)
        elif kind == "progress":
            self.matched, self.total = event["done"], event["total"] or 0
        elif kind == "match":
            self.console.print(
                Text(f"  seen '{event['pattern']}' after {event['seconds']:.1f}s", style="green")
            )
        elif kind == "result":
            self.stop()
        if self.live is not None:
            self.live.update(self.render())

    def render(self) -> Group:
        elapsed = time.monotonic() - self.started if self.started is not None else 0.0
        status = Text(
            f" booting {self.what}  {elapsed:.0f}s  patterns {self.matched}/{self.total}",
            style="bold",
        )
        line = Text(self.last_line[:100], style="dim", no_wrap=True, overflow="ellipsis")
        return Group(Spinner("dots", text=status, style="cyan"), line)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
