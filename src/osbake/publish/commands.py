"""`osbake publish` and `osbake sync`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from osbake.cli import CommandFactory
from osbake.events import Event, Events, JsonLinesSink
from osbake.publish.streams import DEFAULT_CONTENT_ID, Label


class TransferProgress:
    """Byte progress of copies and downloads: one bar per file while it runs, and a total."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.done: dict[str, int] = {}
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}", table_column=None),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        if kind == "progress":
            self._progress(event)
        elif kind == "step" and self.progress is None:
            self.console.print(f"==> {event['name']}")
        elif kind == "log":
            self.console.print(event["line"], soft_wrap=True, highlight=False)
        elif kind == "command" and self.verbose:
            self.console.print(f"$ {event['line']}", soft_wrap=True, highlight=False)

    def _progress(self, event: Event) -> None:
        if self.progress is None:
            return
        name, done, total = event["name"], event["done"], event["total"]
        if not self.tasks:
            self.progress.start()
        task = self.tasks.get(name)
        if task is None:
            task = self.tasks[name] = self.progress.add_task(name, total=total)
        self.progress.update(task, completed=done, total=total)
        if name == "total":
            return
        self.done[name] = done
        if "total" in self.tasks:
            self.progress.update(self.tasks["total"], completed=sum(self.done.values()))
        if total is not None and done >= total:
            self.progress.update(task, visible=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _events(args: argparse.Namespace) -> tuple[Events, TransferProgress | None]:
    if args.json:
        return Events(JsonLinesSink(sys.stdout)), None
    sink = TransferProgress(Console(stderr=True, highlight=False), verbose=args.verbose)
    return Events(sink), sink


def cmd_publish(args: argparse.Namespace) -> int:
    from osbake.publish.tree import publish

    events, sink = _events(args)
    try:
        result = publish(
            [Path(p) for p in args.artifacts],
            Path(args.repo),
            label=Label(args.label),
            serial=args.serial,
            content_prefix=args.content_id,
            sign=args.sign,
            keep=args.keep,
            events=events,
        )
    finally:
        if sink is not None:
            sink.close()
    if args.json:
        print(json.dumps(_publish_json(result), sort_keys=True))
        return 0
    out = Console(highlight=False)
    for version in result.versions:
        state = "published" if version.new else "already published"
        out.print(
            f"{state}: {version.product} {version.version} ({version.label}), "
            f"{len(version.paths)} files"
        )
    for path in result.removed:
        out.print(f"removed: {path}")
    out.print(f"index: {result.index}")
    return 0


def _publish_json(result: Any) -> dict[str, Any]:
    return {
        "event": "published",
        "index": str(result.index),
        "versions": [vars(v) for v in result.versions],
        "removed": result.removed,
    }


def cmd_sync(args: argparse.Namespace) -> int:
    from osbake.publish.sync import sync

    events, sink = _events(args)
    try:
        result = sync(
            args.source,
            args.target,
            keyring=Path(args.keyring) if args.keyring else None,
            filters=args.filters,
            max_versions=args.max,
            jobs=args.jobs,
            events=events,
        )
    finally:
        if sink is not None:
            sink.close()
    summary = (
        f"{len(result.selected)} items selected, {len(result.transferred)} transferred "
        f"({result.bytes / 1e6:.1f} MB) into {result.target}"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "event": "synced",
                    "selected": len(result.selected),
                    "transferred": [i.path for i in result.transferred],
                    "bytes": result.bytes,
                    "target": result.target,
                },
                sort_keys=True,
            )
        )
    else:
        Console(highlight=False).print(summary)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: use 1 or more")
    return value


def register(command: CommandFactory, sub: Any) -> None:
    p = command(
        "publish",
        cmd_publish,
        "publish builds as a simplestreams tree (optionally signed)",
    )
    p.add_argument(
        "artifacts",
        nargs="+",
        metavar="ARTIFACT_OR_MANIFEST",
        help="built artifacts, or <image>.manifest.json to publish all of a build's artifacts",
    )
    p.add_argument("--repo", required=True, help="the tree to publish into (created if missing)")
    p.add_argument(
        "--content-id",
        default=DEFAULT_CONTENT_ID,
        metavar="PREFIX",
        help=f"prefix of the content and product ids (default: {DEFAULT_CONTENT_ID})",
    )
    p.add_argument(
        "--label",
        default=str(Label.DAILY),
        choices=[str(label) for label in Label],
        help="milestone: daily goes to the daily stream, the others to the released stream",
    )
    p.add_argument("--serial", help="version serial YYYYMMDD[.N] (default: the build's date)")
    p.add_argument("--sign", metavar="KEYID", help="also write clearsigned .sjson files (gpg)")
    p.add_argument(
        "--keep", type=_positive, metavar="N", help="keep the newest N versions of each product"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print the commands run")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")

    p = command("sync", cmd_sync, "mirror a simplestreams tree into a directory, Glance or EC2")
    p.add_argument("source", help="the tree's root URL or directory (or an index/products URL)")
    p.add_argument(
        "target", help="a directory, glance:[CLOUD] (clouds.yaml) or ec2:REGION[,REGION...]"
    )
    p.add_argument(
        "filters",
        nargs="*",
        metavar="FILTER",
        help="key=value, key!=value or key~regex (anywhere after the command)",
    )
    p.set_defaults(positionals_anywhere="filters")
    p.add_argument(
        "--keyring", help="verify every stream file's signature; refuse unsigned streams"
    )
    p.add_argument(
        "--max", type=_positive, metavar="N", help="sync the newest N versions of each product"
    )
    p.add_argument("--jobs", type=_positive, default=4, help="parallel downloads (default: 4)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the commands run")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
