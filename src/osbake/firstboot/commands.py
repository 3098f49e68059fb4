"""`osbake seed`: first-boot seeds (NoCloud and ConfigDrive) for cloud-init."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from osbake.deploy.commands import human_size
from osbake.events import Events
from osbake.progress import TerminalProgress


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
        f"'{content.label}', {human_size(size)}"
    )
    out.print(f"  instance-id: {content.instance_id}")
    if content.hostname:
        out.print(f"  hostname:    {content.hostname}")
    if content.user:
        out.print(f"  user:        {content.user}")
    out.print("  files:       " + ", ".join(sorted(content.files)), soft_wrap=True)
    return 0
