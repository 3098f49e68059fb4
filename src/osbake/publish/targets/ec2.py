"""Amazon EC2: the disk goes up as an EBS snapshot through the EBS direct API, block by
block, skipping zero blocks (as AWS's coldsnap does), so no S3 bucket and no vmimport
role are needed. An AMI is registered from the snapshot with the image's
architecture and boot mode, then copied to each further region.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import math
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from osbake import run as runner
from osbake.errors import PublishError, UsageError
from osbake.events import Events
from osbake.publish.streams import DISK_FTYPES, Item
from osbake.publish.targets import Target, TargetKind

BLOCK = 512 * 1024  # the EBS direct API's block size
GIB = 1 << 30
ZERO_BLOCK = bytes(BLOCK)
ARCHITECTURES = {
    "amd64": "x86_64",
    "x86_64": "x86_64",
    "arm64": "arm64",
    "aarch64": "arm64",
    "i386": "i386",
}
ROOT_DEVICE = "/dev/xvda"
QEMU_FORMATS = {"vhd": "vpc"}  # Glance's disk format names -> qemu-img's


def ami_name(item: Item) -> str:
    """An AMI name (3-128 of letters, digits and ()[]./-'@_ and space) for the item."""
    fields = item.fields()
    base = fields.get("pubname") or "-".join(
        p for p in (fields.get("os"), fields.get("release"), fields.get("arch"), item.version) if p
    )
    if item.name not in ("disk1.img", "disk.raw", "disk.img"):
        base += f"-{item.name}"
    return re.sub(r"[^A-Za-z0-9()\[\]./\-'@_ ]", "_", base)[:128]


def boot_mode(item: Item) -> str | None:
    """EC2's BootMode from the image's firmwares (the recipe's `boot`), or None for the default."""
    fields = item.fields()
    modes = {m.strip() for m in fields.get("boot", "").split(",") if m.strip()}
    if {"uefi", "bios"} <= modes:
        return "uefi-preferred"
    if "uefi" in modes:
        return "uefi"
    if "bios" in modes:
        return "legacy-bios"
    return "uefi" if ARCHITECTURES.get(fields.get("arch", "")) == "arm64" else None


def data_blocks(fd: int, size: int) -> Iterator[int]:
    """Indices of the blocks that hold data: holes of a sparse file are never read."""
    offset = 0
    last = -1
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        for index in range(max(start // BLOCK, last + 1), (end - 1) // BLOCK + 1):
            last = index
            yield index
        offset = end


class Ec2Target(Target):
    kind = TargetKind.EC2

    def __init__(self, regions: list[str], *, session: Any = None, jobs: int = 8) -> None:
        if not regions:
            raise UsageError("ec2: name a region", hint="for example ec2:eu-west-1,us-east-1")
        if session is None:
            import boto3  # type: ignore[import-untyped]

            session = boto3.Session()
        self.session = session
        self.regions = regions
        self.jobs = jobs
        self._clients: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_spec(cls, spec: str) -> Ec2Target:
        return cls([r.strip() for r in spec.split(",") if r.strip()])

    def describe(self) -> str:
        return "ec2:" + ",".join(self.regions)

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self.session.client(service, region_name=region)
        return self._clients[key]

    def accepts(self, item: Item) -> bool:
        return item.ftype in DISK_FTYPES

    def _find(self, region: str, name: str) -> str | None:
        images = self._call(
            region,
            "describing images",
            lambda: self.client("ec2", region).describe_images(
                Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
            )["Images"],
        )
        for image in images:
            if image.get("Name") == name and image.get("State") in ("available", "pending"):
                return str(image["ImageId"])
        return None

    def has(self, item: Item) -> bool:
        name = ami_name(item)
        return all(self._find(region, name) for region in self.regions)

    def put(self, item: Item, path: Path, events: Events) -> None:
        name = ami_name(item)
        primary = self.regions[0]
        image_id = self._find(primary, name)
        if image_id is None:
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=".raw-") as tmp:
                raw = self._raw(item, path, Path(tmp), events)
                snapshot = self.upload_snapshot(raw, primary, name, events)
            image_id = self.register(item, snapshot, primary, name, events)
        for region in self.regions[1:]:
            if self._find(region, name) is None:
                copied = self._call(
                    region,
                    "copying the image",
                    lambda region=region: self.client("ec2", region).copy_image(
                        Name=name,
                        SourceImageId=image_id,
                        SourceRegion=primary,
                        Description=f"{name} (osbake sync, copied from {primary})",
                    ),
                )
                events.log(f"ec2:{region}: copied {image_id} as {copied['ImageId']}")

    def _raw(self, item: Item, path: Path, tmp: Path, events: Events) -> Path:
        if DISK_FTYPES[item.ftype] == "raw":
            return path
        raw = tmp / "disk.raw"
        fmt = QEMU_FORMATS.get(DISK_FTYPES[item.ftype], DISK_FTYPES[item.ftype])
        runner.run(
            ["qemu-img", "convert", "-O", "raw", "-f", fmt, path, raw],
            events=events,
            hint="the image file is not a disk image qemu-img can read",
        )
        return raw

    def upload_snapshot(self, raw: Path, region: str, name: str, events: Events) -> str:
        """Write the raw disk into a new EBS snapshot; skip blocks that are all zeros."""
        ebs = self.client("ebs", region)
        size = raw.stat().st_size
        started = self._call(
            region,
            "starting the snapshot",
            lambda: ebs.start_snapshot(
                VolumeSize=max(1, math.ceil(size / GIB)),
                Description=f"{name} (osbake sync)",
                Tags=[{"Key": "Name", "Value": name}],
            ),
        )
        snapshot_id = str(started["SnapshotId"])
        digests: dict[int, bytes] = {}
        sent = 0

        def put(index: int, block: bytes) -> None:
            digest = hashlib.sha256(block).digest()
            ebs.put_snapshot_block(
                SnapshotId=snapshot_id,
                BlockIndex=index,
                BlockData=block,
                DataLength=BLOCK,
                Checksum=base64.b64encode(digest).decode(),
                ChecksumAlgorithm="SHA256",
            )
            digests[index] = digest

        fd = os.open(raw, os.O_RDONLY)
        try:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                pending: list[Future[None]] = []
                for index in data_blocks(fd, size):
                    block = os.pread(fd, BLOCK, index * BLOCK)
                    if block != ZERO_BLOCK[: len(block)]:
                        block = block.ljust(BLOCK, b"\0")
                        pending.append(pool.submit(put, index, block))
                    sent = (index + 1) * BLOCK
                    events.progress(f"snapshot {name}", min(sent, size), size)
                    if len(pending) >= self.jobs * 4:  # bound the blocks held in memory
                        self._wait(pending[: self.jobs], region)
                        pending = pending[self.jobs :]
                self._wait(pending, region)
        finally:
            os.close(fd)
        aggregate = hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()
        self._call(
            region,
            "completing the snapshot",
            lambda: ebs.complete_snapshot(
                SnapshotId=snapshot_id,
                ChangedBlocksCount=len(digests),
                Checksum=base64.b64encode(aggregate).decode(),
                ChecksumAlgorithm="SHA256",
                ChecksumAggregationMethod="LINEAR",
            ),
        )
        events.log(
            f"ec2:{region}: snapshot {snapshot_id}: {len(digests)} of "
            f"{math.ceil(size / BLOCK)} blocks sent (the rest are zeros)"
        )
        ec2 = self.client("ec2", region)
        self._call(
            region,
            "waiting for the snapshot",
            lambda: ec2.get_waiter("snapshot_completed").wait(
                SnapshotIds=[snapshot_id], WaiterConfig={"Delay": 5, "MaxAttempts": 720}
            ),
        )
        return snapshot_id

    def _wait(self, futures: list[Future[None]], region: str) -> None:
        for future in futures:
            self._call(region, "uploading a block", future.result)

    def register(self, item: Item, snapshot_id: str, region: str, name: str, events: Events) -> str:
        arch = item.fields().get("arch", "amd64")
        params: dict[str, Any] = {
            "Name": name,
            "Description": f"{name} (osbake sync of {item.product} {item.version})",
            "Architecture": ARCHITECTURES.get(arch, arch),
            "RootDeviceName": ROOT_DEVICE,
            "BlockDeviceMappings": [
                {
                    "DeviceName": ROOT_DEVICE,
                    "Ebs": {
                        "SnapshotId": snapshot_id,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "VirtualizationType": "hvm",
            "EnaSupport": True,
            "ImdsSupport": "v2.0",
        }
        mode = boot_mode(item)
        if mode:
            params["BootMode"] = mode
        image = self._call(
            region,
            "registering the image",
            lambda: self.client("ec2", region).register_image(**params),
        )
        image_id = str(image["ImageId"])
        events.log(f"ec2:{region}: registered {image_id} '{name}' from {snapshot_id}")
        return image_id

    def _call(self, region: str, what: str, call: Any) -> Any:
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
            NoCredentialsError,
        )

        try:
            return call()
        except NoCredentialsError as exc:
            raise UsageError(
                f"ec2:{region}: no AWS credentials",
                hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            ) from exc
        except (BotoCoreError, ClientError) as exc:
            raise PublishError(f"ec2:{region}: {what} failed: {exc}") from exc
