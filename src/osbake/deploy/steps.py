"""Steps 2 to 7 of a deploy and its finish: checksum, write, verify, table, seed, grow."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from osbake.deploy import layout as layout_mod
from osbake.deploy import partitions
from osbake.deploy import target as target_mod
from osbake.deploy.context import Context
from osbake.deploy.layout import SECTOR
from osbake.deploy.report import GrowReport, SeedPartition
from osbake.deploy.seeds import SEED_LABELS
from osbake.deploy.writer import BlockDigest, DiskWriter, read_back_digest
from osbake.errors import ArtifactError, DeployError

# -- 2. checksum -------------------------------------------------------------------------------


def verify_checksum(ctx: Context) -> None:
    assert ctx.report is not None
    if ctx.expected is None:
        return
    total = ctx.image_path.stat().st_size
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        ctx.events.progress("checksum", done, total)

    actual = _sha256_with_progress(ctx.image_path, tick)
    ctx.report.artifact_sha256 = actual
    if actual != ctx.expected:
        raise ArtifactError(
            f"{ctx.image_path} does not match its checksum ({ctx.report.checksum_source}): "
            f"sha256 is {actual}, expected {ctx.expected}; it is corrupt or was changed",
            hint="fetch or build the image again; the target was not touched",
        )


def _sha256_with_progress(path: Path, tick: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    last = time.monotonic()
    pending = 0
    with path.open("rb", buffering=0) as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
            pending += len(chunk)
            if time.monotonic() - last > 0.2:
                tick(pending)
                pending, last = 0, time.monotonic()
    tick(pending)
    return digest.hexdigest()


# -- 3. write, 4. verify -----------------------------------------------------------------------


def write_image(ctx: Context) -> None:
    assert ctx.image is not None
    assert ctx.target is not None
    assert ctx.report is not None
    if not ctx.target.block_device:
        ctx.lock_fd = target_mod.lock_target(ctx.target, ctx.disk)
    ctx.fd = target_mod.open_target(ctx.target, ctx.disk, force=ctx.force)
    if not ctx.target.block_device:
        # A fresh, all-zero file of the target's size: zeros need not be written.
        os.ftruncate(ctx.fd, 0)
        os.ftruncate(ctx.fd, ctx.target.size)
    size = ctx.image.size
    digest = BlockDigest()
    writer = DiskWriter(
        ctx.fd,
        size,
        zero_fill=ctx.target.block_device,
        digest=digest,
        progress=lambda done: ctx.events.progress("write", done, size),
    )
    writer.write_all(ctx.image.chunks())
    ctx.report.written = writer.written
    ctx.report.skipped = writer.skipped
    ctx.report.content_digest = digest.hexdigest()


def verify_written(ctx: Context) -> None:
    assert ctx.fd is not None
    assert ctx.image is not None
    assert ctx.report is not None
    size = ctx.image.size
    os.fsync(ctx.fd)
    found = read_back_digest(
        ctx.disk, size, progress=lambda done: ctx.events.progress("verify", done, size)
    )
    if found != ctx.report.content_digest:
        raise DeployError(
            f"the data read back from {ctx.target_path} differs from what was written "
            f"(digest {found}, wrote {ctx.report.content_digest})",
            hint="the disk may be failing or something else wrote to it; try again or "
            "use another disk",
        )
    ctx.report.verified = True


# -- 5. table, 6. seed, 7. grow ----------------------------------------------------------------


def _release(ctx: Context) -> None:
    """Close the target so that sfdisk, e2fsck and resize2fs can open it."""
    if ctx.fd is not None:
        os.fsync(ctx.fd)
        os.close(ctx.fd)
        ctx.fd = None


def fix_table(ctx: Context) -> None:
    assert ctx.target is not None
    assert ctx.image is not None
    assert ctx.report is not None
    _release(ctx)
    if ctx.layout.table != "gpt" or ctx.target.size == ctx.image.size:
        return
    partitions.relocate_gpt_backup(ctx.disk, ctx.target.block_device, ctx.events)
    ctx.report.gpt_relocated = True


def write_seed_partition(ctx: Context) -> None:
    assert ctx.target is not None
    assert ctx.seed is not None
    assert ctx.report is not None
    current = partitions.read_target_layout(ctx.disk)
    first, last = layout_mod.seed_partition_start(current.table, ctx.target.size, ctx.seed.size)
    if first <= current.used_end:
        raise DeployError(f"no room for the seed partition after sector {current.used_end}")
    name = "config-2" if SEED_LABELS[ctx.seed.label] == "configdrive" else "cidata"
    added = partitions.add_partition(
        ctx.disk, ctx.target.block_device, current, first, last, name, ctx.events
    )
    fd = os.open(ctx.disk, os.O_RDWR | os.O_CLOEXEC)
    try:
        start = added.start * SECTOR
        if ctx.target.block_device:
            # Zero the partition first: no old signature may linger after the volume.
            target_mod.zero_range(fd, start, added.sectors * SECTOR)
        with ctx.seed.path.open("rb") as source:
            offset = start
            while chunk := source.read(4 << 20):
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    from osbake.firstboot.volume import probe_volume

    if probe_volume(ctx.disk, added.start * SECTOR) != (ctx.seed.filesystem, ctx.seed.label):
        raise DeployError("the seed partition does not read back as the seed volume")
    ctx.report.seed = SeedPartition(
        added.number,
        added.start * SECTOR,
        added.sectors * SECTOR,
        ctx.seed.label,
        ctx.seed.filesystem,
    )


def grow_root(ctx: Context) -> None:
    assert ctx.target is not None
    assert ctx.report is not None
    current = partitions.read_target_layout(ctx.disk)
    seed_number = ctx.report.seed.number if ctx.report.seed else None
    candidates = [p for p in current.partitions if p.number != seed_number]
    root = max(candidates, key=lambda p: p.end)
    fs = partitions.probe_filesystem(ctx.disk, root.start * SECTOR)
    if fs in (None, "vfat", "swap"):
        raise DeployError(
            f"the last partition ({root.number}{', ' + root.name if root.name else ''}) holds "
            f"{fs or 'no filesystem osbake knows'}, not a root filesystem to grow",
            hint="osbake grows the last partition of the disk, where its images keep the "
            "root; deploy without --grow",
        )
    grown = partitions.grow_partition(ctx.disk, ctx.target.block_device, root.number, ctx.events)
    result = partitions.grow_filesystem(ctx.disk, grown, ctx.target.block_device, ctx.events)
    if result.note:
        ctx.report.notes.append(result.note)
    ctx.report.grown = GrowReport(
        root.number,
        root.sectors * SECTOR,
        grown.sectors * SECTOR,
        result.filesystem,
        result.grown,
    )


def finish(ctx: Context) -> None:
    assert ctx.target is not None
    assert ctx.report is not None
    _release(ctx)
    if ctx.target.created:
        os.replace(ctx.disk, ctx.target_path)
    if not ctx.target.block_device:
        return
    fd = os.open(ctx.disk, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ctx.report.partitions_reread = target_mod.reread_partitions(fd)
    finally:
        os.close(fd)
    if not ctx.report.partitions_reread:
        ctx.report.notes.append(
            "the kernel did not re-read the partition table (a loop device without "
            "partition scanning?); it sees the new partitions after a reboot or partprobe"
        )
