"""LVM2 physical volumes written into the image file by osbake, without the lvm tools.

pvcreate, vgcreate and lvcreate need a block device (a loop device, so root) and
device-mapper; osbake writes what they would write instead, so a disk with LVM
builds rootless, like every other disk. One physical volume per volume group,
linear logical volumes in the order of the layout.

The on-disk format (LVM2's `lib/format_text/layout.h`), all little-endian:

- sector 1 of the PV: the label header (`LABELONE`, its sector, a CRC of the rest of
  the sector, the offset of the PV header, `LVM2 001`) and the PV header (the PV's
  32-character id, the device size, the data area list, the metadata area list, and
  the version 2 extension with its `used` flag);
- at 4 KiB, the metadata area: a 512-byte header (CRC, the magic ` LVM2 x[5A%r0N*>`,
  version 1, its own offset and size, and the location, size and CRC of the current
  metadata text), then the volume group's metadata as text, ending in a NUL;
- from `pe_start` (1 MiB) on, the extents; a logical volume's data is at
  pe_start + its first extent x the extent size.

LVM's CRC is CRC-32 (the zlib polynomial) started from 0xf597a6cf, with no final
inversion.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512
PE_START = 1024**2  # where the extents start in the PV; the metadata area is before it
MDA_START = 4096
MDA_HEADER_SIZE = 512
INITIAL_CRC = 0xF597A6CF
LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
FMTT_MAGIC = b" LVM2 x[5A%r0N*>"
PV_EXT_USED = 0x1
# LVM's id alphabet also has '!' and '#'; osbake's ids keep to letters and digits.
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def lvm_crc(data: bytes) -> int:
    """LVM's CRC: zlib's CRC-32 update from 0xf597a6cf, without the final inversion."""
    return ~zlib.crc32(data, ~INITIAL_CRC & 0xFFFFFFFF) & 0xFFFFFFFF


def lvm_id(seed: str) -> str:
    """A 32-character LVM id derived from `seed`."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(ID_CHARS[b % len(ID_CHARS)] for b in digest)


def format_id(raw: str) -> str:
    """The id as LVM prints and stores it in text: 6-4-4-4-4-4-6."""
    cuts = (6, 4, 4, 4, 4, 4, 6)
    parts, at = [], 0
    for cut in cuts:
        parts.append(raw[at : at + cut])
        at += cut
    return "-".join(parts)


def mapper_name(group: str, volume: str) -> str:
    """The device-mapper name of a logical volume: /dev/mapper/<this>."""
    return f"{group.replace('-', '--')}-{volume.replace('-', '--')}"


@dataclass(frozen=True)
class Volume:
    """A linear logical volume: `extents` extents from `start_extent` of the PV."""

    name: str
    id: str  # 32 characters
    start_extent: int
    extents: int


@dataclass(frozen=True)
class Group:
    """A volume group on one physical volume of `pv_size` bytes."""

    name: str
    id: str
    pv_id: str
    pv_size: int
    extent_size: int
    volumes: list[Volume] = field(default_factory=list)
    creation_time: int = 0

    @property
    def pe_count(self) -> int:
        return (self.pv_size - PE_START) // self.extent_size

    def volume_offset(self, name: str) -> int:
        """Where a logical volume's data starts, in bytes from the PV's start."""
        volume = next(v for v in self.volumes if v.name == name)
        return PE_START + volume.start_extent * self.extent_size


def metadata_text(group: Group, device_hint: str) -> str:
    """The volume group's metadata, as LVM's text format writes it."""
    lines = [
        f"{group.name} {{",
        f'id = "{format_id(group.id)}"',
        "seqno = 1",
        'format = "lvm2"',
        'status = ["RESIZEABLE", "READ", "WRITE"]',
        "flags = []",
        f"extent_size = {group.extent_size // SECTOR}",
        "max_lv = 0",
        "max_pv = 0",
        "metadata_copies = 0",
        "",
        "physical_volumes {",
        "",
        "pv0 {",
        f'id = "{format_id(group.pv_id)}"',
        f'device = "{device_hint}"',
        "",
        'status = ["ALLOCATABLE"]',
        "flags = []",
        f"dev_size = {group.pv_size // SECTOR}",
        f"pe_start = {PE_START // SECTOR}",
        f"pe_count = {group.pe_count}",
        "}",
        "}",
        "",
    ]
    if group.volumes:
        lines += ["logical_volumes {", ""]
        for volume in group.volumes:
            lines += [
                f"{volume.name} {{",
                f'id = "{format_id(volume.id)}"',
                'status = ["READ", "WRITE", "VISIBLE"]',
                "flags = []",
                f"creation_time = {group.creation_time}",
                'creation_host = "osbake"',
                "segment_count = 1",
                "",
                "segment1 {",
                "start_extent = 0",
                f"extent_count = {volume.extents}",
                "",
                'type = "striped"',
                "stripe_count = 1",
                "",
                "stripes = [",
                f'"pv0", {volume.start_extent}',
                "]",
                "}",
                "}",
                "",
            ]
        lines[-1] = "}"
        lines.append("")
    lines += [
        "}",
        "# Generated by osbake",
        "",
        'contents = "Text Format Volume Group"',
        "version = 1",
        "",
        'description = "Written by osbake"',
        "",
        'creation_host = "osbake"',
        f"creation_time = {group.creation_time}",
        "",
    ]
    return "\n".join(lines)


def pv_area(group: Group, device_hint: str) -> bytes:
    """The PV's first `PE_START` bytes: the label, the metadata area and the metadata."""
    if group.pv_size < PE_START + group.extent_size:
        raise ValueError(f"a {group.pv_size}-byte physical volume holds no extent")
    used = sum(v.extents for v in group.volumes)
    if used > group.pe_count:
        raise ValueError(f"the logical volumes need {used} extents, the PV has {group.pe_count}")
    area = bytearray(PE_START)
    # The PV header, after the 32-byte label header in sector 1.
    header = bytearray(group.pv_id.encode())
    header += struct.pack("<Q", group.pv_size)
    header += struct.pack("<QQ", PE_START, 0)  # data area: from pe_start to the end
    header += struct.pack("<QQ", 0, 0)
    header += struct.pack("<QQ", MDA_START, PE_START - MDA_START)  # metadata area
    header += struct.pack("<QQ", 0, 0)
    header += struct.pack("<II", 2, PV_EXT_USED)  # extension version 2, in a VG
    header += struct.pack("<QQ", 0, 0)  # no bootloader areas
    label = bytearray(SECTOR)
    label[0:8] = LABEL_ID
    struct.pack_into("<Q", label, 8, 1)
    struct.pack_into("<I", label, 20, 32)
    label[24:32] = LABEL_TYPE
    label[32 : 32 + len(header)] = header
    struct.pack_into("<I", label, 16, lvm_crc(bytes(label[20:])))
    area[SECTOR : 2 * SECTOR] = label
    # The metadata area: its header, then the text (with its NUL) right after it.
    text = metadata_text(group, device_hint).encode() + b"\0"
    if MDA_HEADER_SIZE + len(text) > PE_START - MDA_START:
        raise ValueError("the volume group's metadata does not fit its metadata area")
    mda = bytearray(MDA_HEADER_SIZE)
    mda[4:20] = FMTT_MAGIC
    struct.pack_into("<IQQ", mda, 20, 1, MDA_START, PE_START - MDA_START)
    struct.pack_into("<QQII", mda, 40, MDA_HEADER_SIZE, len(text), lvm_crc(text), 0)
    struct.pack_into("<I", mda, 0, lvm_crc(bytes(mda[4:])))
    area[MDA_START : MDA_START + MDA_HEADER_SIZE] = mda
    at = MDA_START + MDA_HEADER_SIZE
    area[at : at + len(text)] = text
    return bytes(area)


def write_pv(image: Path, offset: int, group: Group, device_hint: str) -> None:
    """Write the physical volume's label and metadata at `offset` in the image file."""
    data = pv_area(group, device_hint)
    with image.open("r+b") as handle:
        handle.seek(offset)
        handle.write(data)
