"""`osbake seed` and `osbake deploy`: first-boot seeds and writing images to disks."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from osbake.errors import UsageError
from osbake.events import Event, Events, JsonLinesSink
from osbake.progress import TerminalProgress

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tib": 1 << 40,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}


def register(command: Any, sub: Any) -> None:
    p = command("seed", cmd_seed, "make a NoCloud or ConfigDrive seed for cloud-init")
    p.add_argument("-o", "--output", required=True, metavar="SEED", help="the seed file to write")
    p.add_argument(
        "--format",
        default="nocloud-iso",
        choices=["nocloud-iso", "nocloud-vfat", "configdrive"],
        help="NoCloud (label cidata) as iso9660 or vfat, or an OpenStack config drive "
        "(label config-2, iso9660); default: nocloud-iso",
    )
    p.add_argument("--user-data", metavar="F", help="user-data (#cloud-config, script, ...)")
    p.add_argument("--meta-data", metavar="F", help="meta-data (YAML or JSON mapping)")
    p.add_argument(
        "--network-config",
        metavar="F",
        help="network config: cloud-init v1/v2 YAML (NoCloud) or OpenStack "
        "network_data.json (configdrive)",
    )
    p.add_argument("--vendor-data", metavar="F", help="vendor-data (like user-data)")
    p.add_argument("--hostname", metavar="H", help="the instance's host name")
    p.add_argument(
        "--ssh-key",
        metavar="F",
        action="append",
        default=[],
        help="an ssh public key file (repeatable); for --user, else the image's default user",
    )
    p.add_argument("--user", metavar="NAME", help="create this user (sudo, ssh keys) instead")
    p.add_argument("--instance-id", metavar="ID", help="default: derived from the content")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print the commands run")

    p = command("deploy", cmd_deploy, "write an image to a disk (or a disk image file)")
    p.add_argument("image", help="the image: raw, qcow2 or raw.tar.xz (with its manifest beside)")
    p.add_argument("target", help="a block device (e.g. /dev/sdb) or a disk image file")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seed", metavar="SEED", help="a seed from 'osbake seed', put in a partition at the end"
    )
    seeds.add_argument(
        "--configdrive",
        metavar="SEED",
        help="an OpenStack config drive (label config-2; also Ironic's gzip+base64 form), "
        "put in a partition at the end",
    )
    p.add_argument("--grow", action="store_true", help="grow the root partition and filesystem")
    p.add_argument("--verify", action="store_true", help="read the written data back and check")
    p.add_argument(
        "--force", action="store_true", help="write even a mounted disk or the system's own disk"
    )
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of an image without manifest")
    p.add_argument(
        "--no-checksum",
        action="store_true",
        help="write an image that has neither manifest nor --sha256, unverified",
    )
    p.add_argument("--size", metavar="SIZE", help="create TARGET as a file of this size (8G)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write IMAGE byte for byte even if it has no partition table or disk image header",
    )
    p.add_argument("--json", action="store_true", help="print events and the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print the commands run")


# -- seed --------------------------------------------------------------------------------------


def cmd_seed(args: argparse.Namespace) -> int:
    from osbake.firstboot import seed_content, write_volume

    def path(value: str | None) -> Path | None:
        return Path(value).expanduser() if value else None

    err = Console(stderr=True, highlight=False)
    events = Events()
    if args.verbose:
        events.add(TerminalProgress(err, verbose=True))
    content = seed_content(
        format=args.format,
        user_data=path(args.user_data),
        meta_data=path(args.meta_data),
        network_config=path(args.network_config),
        vendor_data=path(args.vendor_data),
        hostname=args.hostname,
        ssh_keys=[Path(k).expanduser() for k in args.ssh_key],
        user=args.user,
        instance_id=args.instance_id,
    )
    output = write_volume(content, Path(args.output), events=events)
    size = output.stat().st_size
    summary = {
        "seed": str(output),
        "format": str(content.format),
        "datasource": content.format.datasource,
        "filesystem": content.format.filesystem,
        "label": content.label,
        "instance_id": content.instance_id,
        "hostname": content.hostname,
        "user": content.user,
        "size": size,
        "files": sorted(content.files),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    out = Console(highlight=False)
    out.print(f"{output}")
    out.print(
        f"  {content.format.datasource} seed: {content.format.filesystem} labelled "
        f"'{content.label}', {_size(size)}"
    )
    out.print(f"  instance-id: {content.instance_id}")
    if content.hostname:
        out.print(f"  hostname:    {content.hostname}")
    if content.user:
        out.print(f"  user:        {content.user}")
    out.print("  files:       " + ", ".join(sorted(content.files)), soft_wrap=True)
    return 0


# -- deploy ------------------------------------------------------------------------------------


def parse_size(text: str, flag: str = "--size") -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in SIZE_UNITS:
        raise UsageError(
            f"{flag} {text!r} is not a size", hint="write e.g. 8G, 8GiB, 512M or a byte count"
        )
    value = int(float(match.group(1)) * SIZE_UNITS[unit])
    if value <= 0 or value % 512:
        raise UsageError(f"{flag} {text!r} must be a positive multiple of 512 bytes")
    return value


def cmd_deploy(args: argparse.Namespace) -> int:
    from osbake.deploy import deploy

    err = Console(stderr=True, highlight=False)
    events = Events()
    if args.json:
        events.add(JsonLinesSink(sys.stdout))
    else:
        events.add(DeployProgress(err, verbose=args.verbose))
    report = deploy(
        Path(args.image),
        Path(args.target),
        seed=Path(args.seed) if args.seed else None,
        configdrive=Path(args.configdrive) if args.configdrive else None,
        grow=args.grow,
        verify=args.verify,
        force=args.force,
        sha256=args.sha256,
        checksum=not args.no_checksum,
        size=parse_size(args.size) if args.size else None,
        raw=args.raw,
        events=events,
    )
    if args.json:
        print(json.dumps({"event": "report", **report.to_json()}, sort_keys=True))
        return 0
    out = Console(highlight=False)
    for line in report_lines(report):
        out.print(line, soft_wrap=True)
    return 0


def report_lines(report: Any) -> list[str]:
    lines = [
        f"wrote {report.image} ({report.format}, {_size(report.image_size)}) to "
        f"{report.target} ({report.target_kind}, {_size(report.target_size)}) "
        f"in {report.seconds:.1f}s",
        f"  data:     {_size(report.written)} written, {_size(report.skipped)} of zeros skipped",
    ]
    if report.artifact_sha256:
        lines.append(f"  checksum: sha256 matches {report.checksum_source}")
    if report.verified:
        lines.append("  verified: the data read back from the target matches")
    if report.gpt_relocated:
        lines.append("  table:    GPT backup header moved to the end of the disk")
    if report.seed:
        seed = report.seed
        lines.append(
            f"  seed:     partition {seed.number} ({seed.label}, {seed.filesystem}, "
            f"{_size(seed.size)}) at the end of the disk"
        )
    if report.grown:
        grown = report.grown
        fs = f"{grown.filesystem} grown" if grown.filesystem_grown else "filesystem not grown"
        lines.append(
            f"  grown:    partition {grown.partition} from {_size(grown.old_size)} to "
            f"{_size(grown.new_size)}, {fs}"
        )
    lines += [f"  note:     {note}" for note in report.notes]
    return lines


def _size(value: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value} B"


class DeployProgress(TerminalProgress):
    """The step list of a deploy, with a byte progress bar for the running step."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        super().__init__(console, verbose=verbose)
        self.bar: dict[str, Any] | None = None
        self.reported = 0

    def on_begin(self, event: Event) -> None:
        if self.interactive:
            super().on_begin(event)
            return
        self.image = event["image"]
        self.steps = []
        self.console.print(f"deploying {self.image}")

    def on_step(self, event: Event) -> None:
        super().on_step(event)
        self.bar = None
        self.reported = 0

    def on_progress(self, event: Event) -> None:
        now = time.monotonic()
        if self.bar is None or self.bar["name"] != event["name"]:
            self.bar = {"name": event["name"], "started": now}
        self.bar.update(done=event["done"], total=event["total"], now=now)
        total = event["total"] or 0
        if not self.interactive and total:
            quarter = event["done"] * 4 // total
            if quarter > self.reported:
                self.reported = quarter
                self.console.print(f"    {event['name']}: {quarter * 25}%  {self._rate()}")

    def _rate(self) -> str:
        assert self.bar is not None
        seconds = max(self.bar["now"] - self.bar["started"], 1e-3)
        return f"{_size(int(self.bar['done'] / seconds))}/s"

    def render(self) -> Group:
        group = super().render()
        parts: list[Any] = list(group.renderables)
        parts[0] = Text(f"deploying {self.image}", style="bold")
        if self.bar is not None and self.bar.get("total"):
            done, total = self.bar["done"], self.bar["total"]
            row = Table.grid(padding=(0, 1))
            row.add_row(
                Text(f"  {self.bar['name']:<9}"),
                ProgressBar(total=total, completed=done, width=30),
                Text(f"{_size(done)} / {_size(total)}  {self._rate()}", style="dim"),
            )
            parts.append(row)
        return Group(*parts)
