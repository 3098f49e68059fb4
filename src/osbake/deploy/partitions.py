"""Changes to the written disk: GPT backup header, a seed partition, a grown root.

The partition table is changed with sfdisk, which works on files and devices
alike; the root filesystem is grown with e2fsck and resize2fs addressed at the
partition's byte offset (`disk?offset=N`), so neither partition device nodes,
loop devices nor root are needed.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from osbake import run as runner
from osbake.deploy.layout import LINUX_DATA, SECTOR, Layout, Partition, read_layout
from osbake.errors import DeployError
from osbake.events import Events
from osbake.extents import data_extents

EXT_MAGIC = 0xEF53
COPY_CHUNK = 8 << 20


def _sfdisk(
    target: Path, block_device: bool, args: list[str], script: str | None, events: Events | None
) -> None:
    # On a device, the kernel is told once at the end (BLKRRPART), not by each step.
    quiet = ["--no-reread", "--no-tell-kernel"] if block_device else []
    runner.run(
        ["sfdisk", "--quiet", *quiet, *args, target],
        input=script.encode() if script is not None else None,
        events=events,
        hint="the partition table of the written image could not be changed",
    )


def read_target_layout(target: Path) -> Layout:
    with target.open("rb") as handle:
        return read_layout(handle.read(64 * 1024))


def relocate_gpt_backup(target: Path, block_device: bool, events: Events | None) -> None:
    """Move the backup GPT header and entries to the very end of the target."""
    _sfdisk(target, block_device, ["--relocate", "gpt-bak-std"], None, events)


def add_partition(
    target: Path,
    block_device: bool,
    layout: Layout,
    first: int,
    last: int,
    name: str,
    events: Events | None,
) -> Partition:
    """Append a partition spanning sectors first..last; returns it as the table now has it."""
    size = last - first + 1
    if layout.table == "gpt":
        line = f"start={first}, size={size}, type={LINUX_DATA}, name={name}\n"
    else:
        line = f"start={first}, size={size}, type=83\n"
    if layout.free_number() is None:
        raise DeployError(
            f"the image's {layout.table} partition table has no free entry for the seed partition",
            hint="an MBR holds 4 primary partitions; use a GPT image",
        )
    _sfdisk(target, block_device, ["--append"], line, events)
    after = read_target_layout(target)
    added = [p for p in after.partitions if p.start == first]
    if len(added) != 1:
        raise DeployError(f"sfdisk did not create the seed partition at sector {first}")
    return added[0]


def grow_partition(
    target: Path, block_device: bool, number: int, events: Events | None
) -> Partition:
    """Grow a partition over the free space after it; returns its new extent."""
    _sfdisk(target, block_device, ["-N", str(number)], ", +\n", events)
    after = read_target_layout(target)
    return next(p for p in after.partitions if p.number == number)


@dataclass(frozen=True)
class FilesystemGrowth:
    filesystem: str | None
    grown: bool
    note: str = ""


def probe_filesystem(target: Path, offset: int) -> str | None:
    """ext4, xfs, btrfs, vfat, swap or None: what a partition holds, by its magic."""
    with target.open("rb") as handle:
        handle.seek(offset)
        head = handle.read(68 * 1024)
    if len(head) >= 1082 and struct.unpack("<H", head[1080:1082])[0] == EXT_MAGIC:
        return "ext4"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[65600:65608] == b"_BHRfS_M":
        return "btrfs"
    if head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if head[510:512] == b"\x55\xaa" and (head[54:57] == b"FAT" or head[82:87] == b"FAT32"):
        return "vfat"
    return None


def grow_filesystem(
    target: Path, partition: Partition, block_device: bool, events: Events | None
) -> FilesystemGrowth:
    """Grow the filesystem in a partition to the partition's size, offline.

    On a block device, e2fsck and resize2fs work on it in place (`dev?offset=N`).
    In a disk image file they cannot: resize2fs cuts a regular file down to the
    filesystem's size, offset or not, which would take the partitions after it.
    So the filesystem's data is copied to a sparse file beside the target, grown
    there and copied back - no loop device and no root needed.
    """
    offset = partition.start * SECTOR
    fs = probe_filesystem(target, offset)
    if fs != "ext4":
        what = fs or "an unknown filesystem"
        return FilesystemGrowth(
            fs,
            False,
            f"partition {partition.number} holds {what}, which osbake cannot grow offline; "
            "it grows when mounted (cloud-init's resizefs does that at first boot)",
        )
    if block_device:
        if "?" in str(target):
            raise DeployError(f"cannot grow the filesystem on {target}: its name contains '?'")
        _resize_ext4(
            f"{target}?offset={offset}", partition, _ext_block_size(target, offset), events
        )
        return FilesystemGrowth("ext4", True)
    with tempfile.NamedTemporaryFile(
        prefix=".osbake-grow-", dir=target.parent, delete=True
    ) as scratch:
        scratch_path = Path(scratch.name)
        block_size = _ext_block_size(target, offset)
        new_bytes = partition.sectors * SECTOR // block_size * block_size
        _copy_data(target, offset, scratch_path, 0, partition.sectors * SECTOR)
        # Exactly the new size: then resize2fs neither extends nor truncates the file.
        os.truncate(scratch_path, new_bytes)
        _resize_ext4(str(scratch_path), partition, block_size, events)
        _copy_data(scratch_path, 0, target, offset, new_bytes)
    return FilesystemGrowth("ext4", True)


def _ext_block_size(target: Path, offset: int) -> int:
    with target.open("rb") as handle:
        handle.seek(offset + 1024 + 24)
        (log,) = struct.unpack("<I", handle.read(4))
    return int(1024 << log)


def _resize_ext4(device: str, partition: Partition, block_size: int, events: Events | None) -> None:
    checked = runner.run(["e2fsck", "-f", "-p", device], events=events, check=False)
    # 0: clean, 1: errors corrected; anything from 4 up means it is still broken.
    if checked.returncode >= 4:
        raise DeployError(
            f"the root filesystem in partition {partition.number} has errors e2fsck could "
            f"not fix (status {checked.returncode}):\n"
            + "\n".join(f"    {line}" for line in checked.tail),
            hint="the image is damaged; rebuild it, or deploy without --grow and repair it",
        )
    blocks = partition.sectors * SECTOR // block_size
    runner.run(
        ["resize2fs", device, str(blocks)],
        events=events,
        hint="resize2fs could not grow the root filesystem",
    )


def _copy_data(source: Path, start: int, dest: Path, dest_start: int, length: int) -> None:
    """Copy the data extents of source[start:start+length] to dest at dest_start; holes
    are skipped (the destination reads zeros there already)."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    out = os.open(dest, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for data_start, data_end in data_extents(src, start + length, start):
            cursor = data_start
            while cursor < data_end:
                chunk = os.pread(src, min(COPY_CHUNK, data_end - cursor), cursor)
                if not chunk:
                    break
                os.pwrite(out, chunk, dest_start + cursor - start)
                cursor += len(chunk)
        os.fsync(out)
    finally:
        os.close(src)
        os.close(out)
