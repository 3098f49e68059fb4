"""The partition table at the start of a disk image (GPT or MBR), read from its first bytes.

Deploy reads it from the image before writing anything, to know how much room a
config drive partition needs and which partition is the root to grow; sfdisk
makes the changes afterwards.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from osbake.disk.layout import GPT_TYPES
from osbake.extents import align_down, align_up
from osbake.recipe.model import PartitionType

SECTOR = 512
ALIGN_SECTORS = 2048  # 1 MiB
GPT_BACKUP_SECTORS = 33  # header + 128 entries of 128 bytes, at the end of the disk
LINUX_DATA = GPT_TYPES[PartitionType.LINUX]
ESP = GPT_TYPES[PartitionType.ESP]
BIOS_BOOT = GPT_TYPES[PartitionType.BIOS_GRUB]
MBR_EXTENDED = {0x05, 0x0F, 0x85}
MBR_LIMIT = 0xFFFFFFFF - 1


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # first sector
    end: int  # last sector (inclusive)
    type: str  # GPT type GUID (upper case) or MBR type as two hex digits
    name: str = ""

    @property
    def sectors(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Layout:
    table: str | None  # "gpt", "dos" or None (no partition table)
    partitions: tuple[Partition, ...] = field(default_factory=tuple)
    entries: int = 128  # GPT: number of entries the table has room for

    @property
    def last(self) -> Partition | None:
        """The partition that ends last on the disk."""
        return max(self.partitions, key=lambda p: p.end, default=None)

    @property
    def used_end(self) -> int:
        """The last sector any partition uses (or the primary GPT's last sector)."""
        last = self.last
        if last is not None:
            return last.end
        return 33 if self.table == "gpt" else 0

    def free_number(self) -> int | None:
        taken = {p.number for p in self.partitions}
        limit = self.entries if self.table == "gpt" else 4
        return next((n for n in range(1, limit + 1) if n not in taken), None)


def read_layout(head: bytes) -> Layout:
    """Parse the table from the disk's first bytes (at least 34 sectors for GPT)."""
    if len(head) >= 2 * SECTOR and head[SECTOR : SECTOR + 8] == b"EFI PART":
        return _read_gpt(head)
    if len(head) >= SECTOR and head[510:512] == b"\x55\xaa":
        return _read_mbr(head)
    return Layout(None)


# The OEM names and file system types of boot sectors that end in 55 AA like an MBR.
_VOLUME_BOOT_SECTORS = ((3, b"NTFS"), (3, b"EXFAT"), (54, b"FAT"), (82, b"FAT32"))


def is_partitioned_disk(head: bytes, size: int) -> bool:
    """Whether these first bytes of a disk of `size` bytes hold a partition table with
    at least one partition inside the disk: a GPT, or an MBR that is not the boot
    sector of a bare file system (FAT and NTFS end their first sector in 55 AA too)."""
    layout = read_layout(head)
    if layout.table is None or not layout.partitions:
        return False
    sectors = size // SECTOR
    if any(p.start < 1 or p.end < p.start or p.start >= sectors for p in layout.partitions):
        return False
    if layout.table == "gpt":
        (header_size,) = struct.unpack("<I", head[SECTOR + 12 : SECTOR + 16])
        entries_lba, _, entry_size = struct.unpack("<QII", head[SECTOR + 72 : SECTOR + 88])
        return bool(92 <= header_size <= SECTOR and entries_lba >= 2 and entry_size >= 128)
    if head[0] in (0xEB, 0xE9) and any(
        head[at : at + len(name)] == name for at, name in _VOLUME_BOOT_SECTORS
    ):
        return False
    # Each MBR entry's status byte is 00 or 80 (bootable).
    return all(head[446 + index * 16] in (0x00, 0x80) for index in range(4))


def _read_gpt(head: bytes) -> Layout:
    header = head[SECTOR : 2 * SECTOR]
    entries_lba, count, entry_size = struct.unpack("<QII", header[72:88])
    partitions: list[Partition] = []
    start = entries_lba * SECTOR
    for index in range(count):
        raw = head[start + index * entry_size : start + (index + 1) * entry_size]
        if len(raw) < 128:
            break
        type_guid = uuid.UUID(bytes_le=raw[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack("<QQ", raw[32:48])
        name = raw[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        partitions.append(Partition(index + 1, first, last, str(type_guid).upper(), name))
    return Layout("gpt", tuple(partitions), entries=count)


def _read_mbr(head: bytes) -> Layout:
    partitions: list[Partition] = []
    for index in range(4):
        raw = head[446 + index * 16 : 446 + (index + 1) * 16]
        kind = raw[4]
        first, count = struct.unpack("<II", raw[8:16])
        if kind == 0 or count == 0:
            continue
        if kind == 0xEE:  # a protective MBR whose GPT did not come along
            return Layout(None)
        partitions.append(Partition(index + 1, first, first + count - 1, f"{kind:02x}"))
    return Layout("dos", tuple(partitions))


def disk_last_usable(table: str | None, disk_bytes: int) -> int:
    """The last sector a partition may use on a disk of this size."""
    sectors = disk_bytes // SECTOR
    if table == "gpt":
        return sectors - 1 - GPT_BACKUP_SECTORS
    # An MBR counts sectors in 32 bits: nothing past 2 TiB is reachable.
    return min(sectors - 1, MBR_LIMIT)


def seed_partition_start(table: str | None, disk_bytes: int, seed_bytes: int) -> tuple[int, int]:
    """(first, last) sector of a seed partition at the end of the disk, 1 MiB aligned."""
    last = disk_last_usable(table, disk_bytes)
    sectors = align_up(max(seed_bytes, 1), ALIGN_SECTORS * SECTOR) // SECTOR
    first = align_down(last + 1 - sectors, ALIGN_SECTORS)
    return first, last


def space_needed(layout: Layout, image_bytes: int, seed_bytes: int | None) -> int:
    """The smallest target (bytes) that holds the image and, if asked, a seed partition."""
    if seed_bytes is None:
        return image_bytes
    sectors = align_up(max(seed_bytes, 1), ALIGN_SECTORS * SECTOR) // SECTOR
    first = align_up(layout.used_end + 1, ALIGN_SECTORS)
    tail = GPT_BACKUP_SECTORS if layout.table == "gpt" else 0
    return max(image_bytes, (first + sectors + tail) * SECTOR)
