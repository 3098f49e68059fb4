"""`osbake deploy`: write an image to a disk (or a disk image file)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from osbake import formats
from osbake.errors import UsageError
from osbake.events import Event, Events, JsonLinesSink
from osbake.progress import TerminalProgress


def register(command: Any, sub: Any) -> None:
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


def parse_size(text: str, flag: str = "--size") -> int:
    try:
        value = formats.parse_size(text, flag=True)
    except ValueError:
        raise UsageError(
            f"{flag} {text!r} is not a size", hint="write e.g. 8G, 8GiB, 512M or a byte count"
        ) from None
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
        f"wrote {report.image} ({report.format}, {human_size(report.image_size)}) to "
        f"{report.target} ({report.target_kind}, {human_size(report.target_size)}) "
        f"in {report.seconds:.1f}s",
        f"  data:     {human_size(report.written)} written, "
        f"{human_size(report.skipped)} of zeros skipped",
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
            f"{human_size(seed.size)}) at the end of the disk"
        )
    if report.grown:
        grown = report.grown
        fs = f"{grown.filesystem} grown" if grown.filesystem_grown else "filesystem not grown"
        lines.append(
            f"  grown:    partition {grown.partition} from {human_size(grown.old_size)} to "
            f"{human_size(grown.new_size)}, {fs}"
        )
    lines += [f"  note:     {note}" for note in report.notes]
    return lines


def human_size(value: int) -> str:
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
        return f"{human_size(int(self.bar['done'] / seconds))}/s"

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
                Text(f"{human_size(done)} / {human_size(total)}  {self._rate()}", style="dim"),
            )
            parts.append(row)
        return Group(*parts)
