"""Amazon EC2: the disk goes up as an EBS snapshot through the EBS direct API, block by
block, skipping zero blocks (as AWS's coldsnap does), so no S3 bucket and no vmimport
role are needed. The snapshot is read back block by block and compared with the disk
before an AMI is registered from it; the AMI is then copied to each further region.

Everything osbake makes carries tags: the stream identity (`osbake:content_id`,
`osbake:product_name`, `osbake:version_name`, `osbake:item_name`), the file's checksum
(`osbake:source`) and who synced it (`osbake:sync_owner`); an AMI also carries
`osbake:verified` (what was checked) and `osbake:snapshot`. An AMI counts as there only
with all of them: one registered from a snapshot that was not checked never does.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from osbake import run as runner
from osbake.arch import Arch, Firmware, from_any
from osbake.errors import PublishError, UsageError, VerifyError
from osbake.events import Events
from osbake.extents import data_extents
from osbake.extras import Extra, needs
from osbake.publish import staging
from osbake.publish.download import verify_file
from osbake.publish.streams import DISK_FTYPES, Item
from osbake.publish.targets import Target, TargetKind

BLOCK = 512 * 1024  # the EBS direct API's block size
GIB = 1 << 30
ZERO_BLOCK = bytes(BLOCK)
DEFAULT_ARCH = str(Arch.AMD64)  # an item that names no arch
ROOT_DEVICE = "/dev/xvda"
QEMU_FORMATS = {"vhd": "vpc"}  # Glance's disk format names -> qemu-img's
PRESENT_STATES = ("available", "pending")
BROKEN_STATES = ("failed", "error", "invalid")
IDENTITY_TAGS = {
    "osbake:content_id": "content_id",
    "osbake:product_name": "product_name",
    "osbake:version_name": "version_name",
    "osbake:item_name": "item_name",
}


def ec2_arch(name: str) -> str:
    """RegisterImage's Architecture for a stream's arch (any of its names; its own if
    unknown)."""
    arch = from_any(name)
    return (arch.info.ec2 or name) if arch is not None else name


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
    # Where the architecture has no BIOS (arm64), EC2 boots it with UEFI.
    arch = from_any(fields.get("arch", ""))
    info = arch.info if arch is not None else None
    if info is not None and info.ec2 and info.grub_efi and Firmware.BIOS not in info.firmwares:
        return "uefi"
    return None


def source_tag(item: Item) -> str:
    """The stream's checksum of the file, as the `osbake:source` tag carries it."""
    checksum = item.checksum()
    return f"{checksum[0]}:{checksum[1]}" if checksum else ""


def identity_tags(item: Item) -> dict[str, str]:
    fields = item.fields()
    return {tag: fields[key][:256] for tag, key in IDENTITY_TAGS.items()}


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def data_blocks(fd: int, size: int) -> Iterator[int]:
    """Indices of the blocks that hold data: holes of a sparse file are never read."""
    last = -1
    for start, end in data_extents(fd, size):
        for index in range(max(start // BLOCK, last + 1), (end - 1) // BLOCK + 1):
            last = index
            yield index


def _code(exc: BaseException) -> str:
    """The AWS error code behind an error (botocore's ClientError), or ''."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    return str(((response or {}).get("Error") or {}).get("Code", ""))


def read_block(fd: int, index: int) -> bytes:
    """Block `index` of the disk, padded with zeros at the end of the disk."""
    return os.pread(fd, BLOCK, index * BLOCK).ljust(BLOCK, b"\0")


class Ec2Target(Target):
    kind = TargetKind.EC2

    def __init__(self, regions: list[str], *, session: Any = None, jobs: int = 8) -> None:
        if not regions:
            raise UsageError("ec2: name a region", hint="for example ec2:eu-west-1,us-east-1")
        if session is None:
            with needs(Extra.PUBLISH, "the EC2 target (ec2:)"):
                import boto3  # type: ignore[import-untyped]

            session = boto3.Session()
        self.session = session
        self.regions = list(dict.fromkeys(regions))
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

    def tags(self, item: Item) -> dict[str, str]:
        """What every snapshot and AMI made for the item carries."""
        return {
            "Name": ami_name(item),
            **identity_tags(item),
            "osbake:source": source_tag(item),
            "osbake:sync_owner": self.owner,
        }

    # -- what is there -----------------------------------------------------------------------

    def _images(self, region: str, item: Item) -> list[dict[str, Any]]:
        """AMIs of the item in `region`: by its stream identity, and (from osbake versions
        that did not tag) by its name with osbake's description."""
        ec2 = self.client("ec2", region)
        identity = [{"Name": f"tag:{k}", "Values": [v]} for k, v in identity_tags(item).items()]
        found = {
            image["ImageId"]: image
            for image in self._call(
                region,
                "describing images",
                lambda: ec2.describe_images(Owners=["self"], Filters=identity)["Images"],
            )
        }
        name = ami_name(item)
        for image in self._call(
            region,
            "describing images",
            lambda: ec2.describe_images(
                Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
            )["Images"],
        ):
            if image.get("Name") == name and "(osbake sync" in str(image.get("Description")):
                found.setdefault(image["ImageId"], image)
        return sorted(found.values(), key=lambda i: (str(i.get("CreationDate")), i["ImageId"]))

    def _present(self, image: dict[str, Any], item: Item) -> bool:
        """An AMI of the item made from a snapshot that was checked (or a copy of one)."""
        tags = tags_of(image)
        return (
            image.get("State") in PRESENT_STATES
            and all(tags.get(k) == v for k, v in identity_tags(item).items())
            and tags.get("osbake:source") == source_tag(item)
            and bool(tags.get("osbake:verified"))
        )

    def _find(self, region: str, item: Item) -> dict[str, Any] | None:
        return next((i for i in self._images(region, item) if self._present(i, item)), None)

    def has(self, item: Item) -> bool:
        return all(self._find(region, item) for region in self.regions)

    def reconcile(self, item: Item, events: Events) -> bool:
        """Deregister AMIs of the item that are not verified, failed or second copies, delete
        what interrupted syncs left, then copy a verified AMI to the regions that lack it."""
        present: dict[str, dict[str, Any]] = {}
        for region in self.regions:
            images = self._images(region, item)
            good = [i for i in images if self._present(i, item)]
            for image in images:
                if good and image is good[0]:
                    continue
                if image in good:
                    why = f"a second copy of {good[0]['ImageId']}"
                elif image.get("State") in PRESENT_STATES:
                    made_from = tags_of(image).get("osbake:source")
                    if made_from and made_from != source_tag(item):
                        why = "it was made from another file than the stream's"
                    else:
                        why = "its snapshot was never checked against the image"
                elif image.get("State") in BROKEN_STATES:
                    why = f"it is {image.get('State')}"
                else:
                    continue
                self._deregister(region, image, why, events)
            self._remove_leftover_snapshots(region, item, good[0] if good else None, events)
            if good:
                present[region] = good[0]
        missing = [r for r in self.regions if r not in present]
        if not present or not missing:
            return bool(present)
        source_region = next(r for r in self.regions if r in present)
        for region in missing:
            self._copy(item, present[source_region], source_region, region, events)
        return True

    def _deregister(self, region: str, image: dict[str, Any], why: str, events: Events) -> None:
        ec2 = self.client("ec2", region)
        image_id = image["ImageId"]
        try:
            self._call(
                region, "deregistering an image", lambda: ec2.deregister_image(ImageId=image_id)
            )
        except PublishError as exc:
            if _code(exc) not in ("InvalidAMIID.Unavailable", "InvalidAMIID.NotFound"):
                raise
            return  # another sync deregistered it just now
        events.log(f"ec2:{region}: deregistered {image_id} '{image.get('Name')}': {why}")
        # Its snapshots served only it: the one osbake wrote, or the one EC2 made for a copy.
        snapshots = {tags_of(image).get("osbake:snapshot")} | {
            (mapping.get("Ebs") or {}).get("SnapshotId")
            for mapping in image.get("BlockDeviceMappings") or []
        }
        for snapshot in sorted(s for s in snapshots if s):
            self._delete_snapshot(region, snapshot, events)

    def _remove_leftover_snapshots(
        self, region: str, item: Item, keep: dict[str, Any] | None, events: Events
    ) -> None:
        """Snapshots an interrupted sync from here made for the item and no AMI uses.

        With the item's lock held, no other sync from here is making one now.
        """
        ec2 = self.client("ec2", region)
        filters = [
            {"Name": f"tag:{k}", "Values": [v]}
            for k, v in {**identity_tags(item), "osbake:sync_owner": self.owner}.items()
        ]
        snapshots = self._call(
            region,
            "describing snapshots",
            lambda: ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"],
        )
        used = tags_of(keep).get("osbake:snapshot") if keep else None
        for snapshot in snapshots:
            if snapshot["SnapshotId"] != used and "osbake:state" in tags_of(snapshot):
                self._delete_snapshot(region, snapshot["SnapshotId"], events)

    def _delete_snapshot(self, region: str, snapshot_id: str, events: Events) -> None:
        ec2 = self.client("ec2", region)
        try:
            self._call(
                region,
                "deleting a snapshot",
                lambda: ec2.delete_snapshot(SnapshotId=snapshot_id),
            )
        except PublishError as exc:  # not fatal: AWS ends unfinished snapshots itself
            events.log(f"ec2:{region}: could not delete snapshot {snapshot_id} ({exc.message})")
            return
        events.log(f"ec2:{region}: deleted snapshot {snapshot_id} (not used by a checked AMI)")

    # -- putting it there --------------------------------------------------------------------

    def put(self, item: Item, path: Path, events: Events) -> None:
        name = ami_name(item)
        primary = self.regions[0]
        for leftover in staging.leftovers(path, "raw"):
            staging.remove(leftover)  # conversions of interrupted runs (the lock is ours)
        work = staging.private(path, "raw")
        work.mkdir()
        try:
            verify_file(item, path)  # right before it is converted
            raw = self._raw(item, path, work, events)
            snapshot = self.upload_snapshot(raw, primary, name, events, tags=self.tags(item))
            try:
                compared = self.verify_snapshot(raw, primary, snapshot, events)
            except VerifyError:
                self._delete_snapshot(primary, snapshot, events)
                raise
        finally:
            staging.remove(work)
        ec2 = self.client("ec2", primary)
        self._call(
            primary,
            "tagging the snapshot",
            lambda: ec2.create_tags(
                Resources=[snapshot], Tags=tag_list({"osbake:state": "verified"})
            ),
        )
        verified = f"{snapshot}: {compared} blocks read back and compared with the image"
        try:
            image_id = self.register(
                item,
                snapshot,
                primary,
                name,
                events,
                tags={**self.tags(item), "osbake:snapshot": snapshot, "osbake:verified": verified},
            )
        except PublishError as exc:
            # AWS refuses a second AMI of one name: another sync registered it first.
            there = self._find(primary, item) if _code(exc) == "InvalidAMIName.Duplicate" else None
            if there is None:
                raise
            self._delete_snapshot(primary, snapshot, events)
            image_id = str(there["ImageId"])
        # A sync from elsewhere (another host or cache folder) may have registered the item
        # meanwhile (an EC2 that refuses a second AMI of one name makes that an error,
        # above): each sync keeps the first checked AMI in a fixed order and deregisters
        # the others it sees, so the last one to look leaves exactly one.
        source = self._keep_one(primary, item, events) or {"ImageId": image_id}
        for region in self.regions[1:]:
            if self._find(region, item) is None:
                self._copy(item, source, primary, region, events)

    def _keep_one(self, region: str, item: Item, events: Events) -> dict[str, Any] | None:
        """The first checked AMI of the item in `region`; the others are deregistered."""
        good = [i for i in self._images(region, item) if self._present(i, item)]
        for image in good[1:]:
            self._deregister(region, image, f"a second copy of {good[0]['ImageId']}", events)
        return good[0] if good else None

    def _copy(
        self,
        item: Item,
        source: dict[str, Any],
        source_region: str,
        region: str,
        events: Events,
    ) -> None:
        """Copy a checked AMI to `region` (AWS copies it; nothing is downloaded again)."""
        name = ami_name(item)
        source_id = source["ImageId"]
        tags = {
            **self.tags(item),
            "osbake:verified": f"copy of {source_id} in {source_region}",
        }
        ec2 = self.client("ec2", region)
        copied = self._call(
            region,
            "copying the image",
            lambda: ec2.copy_image(
                Name=name,
                SourceImageId=source_id,
                SourceRegion=source_region,
                Description=f"{name} (osbake sync, copied from {source_region})",
                TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}],
            ),
        )
        image_id = str(copied["ImageId"])
        self._call(
            region,
            "tagging the image",
            lambda: ec2.create_tags(Resources=[image_id], Tags=tag_list(tags)),
        )
        events.log(f"ec2:{region}: copied {source_id} from {source_region} as {image_id}")
        self._keep_one(region, item, events)  # a sync from elsewhere may have copied it too

    def _raw(self, item: Item, path: Path, work: Path, events: Events) -> Path:
        if DISK_FTYPES[item.ftype] == "raw":
            return path
        raw = work / "disk.raw"
        fmt = QEMU_FORMATS.get(DISK_FTYPES[item.ftype], DISK_FTYPES[item.ftype])
        runner.run(
            ["qemu-img", "convert", "-O", "raw", "-f", fmt, path, raw],
            events=events,
            hint="the image file is not a disk image qemu-img can read",
        )
        return raw

    def upload_snapshot(
        self,
        raw: Path,
        region: str,
        name: str,
        events: Events,
        *,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Write the raw disk into a new EBS snapshot; skip blocks that are all zeros."""
        ebs = self.client("ebs", region)
        size = raw.stat().st_size
        started = self._call(
            region,
            "starting the snapshot",
            lambda: ebs.start_snapshot(
                VolumeSize=max(1, math.ceil(size / GIB)),
                Description=f"{name} (osbake sync)",
                Tags=tag_list({"Name": name, **(tags or {}), "osbake:state": "uploading"}),
            ),
        )
        snapshot_id = str(started["SnapshotId"])
        digests: dict[int, bytes] = {}

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
                    block = read_block(fd, index)
                    if block != ZERO_BLOCK:
                        pending.append(pool.submit(put, index, block))
                    events.progress(f"snapshot {name}", min((index + 1) * BLOCK, size), size)
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

    def verify_snapshot(self, raw: Path, region: str, snapshot_id: str, events: Events) -> int:
        """Read every block of the snapshot back and compare it with the disk; every block
        of the disk that is not zeros must be there. Returns the blocks compared."""
        ebs = self.client("ebs", region)
        listed: dict[int, str] = {}
        request: dict[str, Any] = {"SnapshotId": snapshot_id}
        while True:
            page = self._call(
                region,
                "listing the snapshot's blocks",
                lambda: ebs.list_snapshot_blocks(**request),
            )
            for block in page.get("Blocks") or []:
                listed[int(block["BlockIndex"])] = str(block["BlockToken"])
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
        size = raw.stat().st_size
        fd = os.open(raw, os.O_RDONLY)
        try:

            def differs(index: int) -> bool:
                response = ebs.get_snapshot_block(
                    SnapshotId=snapshot_id, BlockIndex=index, BlockToken=listed[index]
                )
                data = response["BlockData"].read()
                digest = hashlib.sha256(data).digest()
                said = response.get("Checksum")
                sha256 = response.get("ChecksumAlgorithm", "SHA256") == "SHA256"
                if said and sha256 and base64.b64decode(said) != digest:
                    return True  # what arrived is not what the API says it sent
                return digest != hashlib.sha256(read_block(fd, index)).digest()

            def check(index: int) -> bool:
                return bool(self._call(region, "reading a block", lambda: differs(index)))

            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                wrong = dict(zip(sorted(listed), pool.map(check, sorted(listed)), strict=True))
            bad = [index for index, differ in wrong.items() if differ]
            missing = [
                index
                for index in data_blocks(fd, size)
                if index not in listed and read_block(fd, index) != ZERO_BLOCK
            ]
        finally:
            os.close(fd)
        if bad or missing:
            detail = []
            if bad:
                detail.append(f"{len(bad)} blocks differ (first: {bad[0]})")
            if missing:
                detail.append(f"{len(missing)} blocks of data are missing (first: {missing[0]})")
            raise VerifyError(
                f"ec2:{region}: snapshot {snapshot_id} does not match the image: "
                f"{', '.join(detail)} of {len(listed)} read back; it was deleted and no AMI "
                "was registered",
                hint="the upload was damaged on the way; run the sync again",
            )
        events.log(
            f"ec2:{region}: snapshot {snapshot_id}: all {len(listed)} blocks read back match "
            "the image"
        )
        return len(listed)

    def _wait(self, futures: list[Future[None]], region: str) -> None:
        for future in futures:
            self._call(region, "uploading a block", future.result)

    def register(
        self,
        item: Item,
        snapshot_id: str,
        region: str,
        name: str,
        events: Events,
        *,
        tags: dict[str, str] | None = None,
    ) -> str:
        arch = item.fields().get("arch", DEFAULT_ARCH)
        params: dict[str, Any] = {
            "Name": name,
            "Description": f"{name} (osbake sync of {item.product} {item.version})",
            "Architecture": ec2_arch(arch),
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
        if tags:
            params["TagSpecifications"] = [{"ResourceType": "image", "Tags": tag_list(tags)}]
        mode = boot_mode(item)
        if mode:
            params["BootMode"] = mode
        ec2 = self.client("ec2", region)
        image = self._call(region, "registering the image", lambda: ec2.register_image(**params))
        image_id = str(image["ImageId"])
        if tags:  # not every EC2 (moto, say) applies tags given with RegisterImage
            self._call(
                region,
                "tagging the image",
                lambda: ec2.create_tags(Resources=[image_id], Tags=tag_list(tags)),
            )
        events.log(f"ec2:{region}: registered {image_id} '{name}' from {snapshot_id}")
        return image_id

    def _call(self, region: str, what: str, call: Callable[[], Any]) -> Any:
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
