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
import re
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


# -- reading a physical volume back (osbake inspect) -------------------------------------

MAX_METADATA = 1024**2  # bytes of metadata text read from an untrusted PV
MAX_DEPTH = 16  # nesting of its sections
_TOKEN = re.compile(
    r'\s+|#[^\n]*|"(?P<string>(?:[^"\\]|\\.)*)"|(?P<number>-?\d+)\b'
    r"|(?P<name>[A-Za-z0-9_.+-]+)|(?P<punct>[={}\[\],])"
)


@dataclass(frozen=True)
class LogicalVolume:
    """Where a linear logical volume's data is, in bytes from the PV's start."""

    group: str
    name: str
    offset: int
    length: int


def pv_metadata_location(area: bytes) -> tuple[int, int] | None:
    """(offset, size) of the PV's metadata area, read from its label; None if `area`
    (the PV's first bytes) holds no LVM2 label."""
    for sector in range(4):
        label = area[sector * SECTOR : (sector + 1) * SECTOR]
        if len(label) < SECTOR or label[0:8] != LABEL_ID or label[24:32] != LABEL_TYPE:
            continue
        at = struct.unpack_from("<I", label, 20)[0]
        if at < 32 or at > SECTOR - 40:
            return None
        pos = at + 32 + 8  # the PV's id and its device size
        lists: list[list[tuple[int, int]]] = []
        for _ in range(2):  # the data areas, then the metadata areas; each ends in 0, 0
            found: list[tuple[int, int]] = []
            while pos + 16 <= SECTOR:
                offset, size = struct.unpack_from("<QQ", label, pos)
                pos += 16
                if offset == 0 and size == 0:
                    break
                found.append((offset, size))
            lists.append(found)
        return lists[1][0] if lists[1] else None
    return None


def metadata_from_area(area: bytes, mda_offset: int, mda_size: int) -> str | None:
    """The volume group's current metadata text from the metadata area at `mda_offset`
    (a ring buffer after its 512-byte header); None when it is not there or damaged."""
    header = area[mda_offset : mda_offset + MDA_HEADER_SIZE]
    if len(header) < MDA_HEADER_SIZE or header[4:20] != FMTT_MAGIC:
        return None
    if lvm_crc(bytes(header[4:])) != struct.unpack_from("<I", header, 0)[0]:
        return None
    offset, size, crc = struct.unpack_from("<QQI", header, 40)
    if size == 0 or size > MAX_METADATA or offset < MDA_HEADER_SIZE or offset >= mda_size:
        return None
    ring = area[mda_offset : mda_offset + mda_size]
    if len(ring) < mda_size:
        return None
    first = ring[offset : offset + size]
    text = first + ring[MDA_HEADER_SIZE : MDA_HEADER_SIZE + size - len(first)]
    if len(text) != size or lvm_crc(text) != crc:
        return None
    return text.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_metadata(text: str) -> dict[str, object]:
    """LVM2's text format as nested dicts (values: int, str, list); ValueError if not."""
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"unexpected {text[pos : pos + 10]!r} in the metadata")
        pos = match.end()
        if match.group("string") is not None:
            tokens.append(("value", match.group("string")))
        elif match.group("number") is not None:
            tokens.append(("value", int(match.group("number"))))
        elif match.group("name") is not None:
            tokens.append(("name", match.group("name")))
        elif match.group("punct") is not None:
            tokens.append(("punct", match.group("punct")))
    at = 0

    def section(depth: int) -> dict[str, object]:
        nonlocal at
        if depth > MAX_DEPTH:
            raise ValueError("the metadata nests too deep")
        out: dict[str, object] = {}
        while at < len(tokens) and tokens[at] != ("punct", "}"):
            kind, key = tokens[at]
            if kind != "name" or at + 1 >= len(tokens):
                raise ValueError(f"a name was expected, not {key!r}")
            at += 2
            if tokens[at - 1] == ("punct", "{"):
                out[str(key)] = section(depth + 1)
                at += 1  # the closing brace
            elif tokens[at - 1] == ("punct", "=") and at < len(tokens):
                if tokens[at] == ("punct", "["):
                    items: list[object] = []
                    at += 1
                    while at < len(tokens) and tokens[at] != ("punct", "]"):
                        if tokens[at][0] == "value":
                            items.append(tokens[at][1])
                        at += 1
                    at += 1
                    out[str(key)] = items
                else:
                    out[str(key)] = tokens[at][1]
                    at += 1
            else:
                raise ValueError(f"'=' or '{{' was expected after {key!r}")
        return out

    result = section(0)
    if at != len(tokens):
        raise ValueError("unbalanced braces in the metadata")
    return result


def logical_volumes(text: str) -> list[LogicalVolume]:
    """The linear logical volumes of the metadata's volume group, with their places on
    its first PV; others (striped over PVs, thin, snapshots) are left out."""
    tree = parse_metadata(text)
    found: list[LogicalVolume] = []
    for group_name, group in tree.items():
        if not isinstance(group, dict):
            continue
        extent = group.get("extent_size")
        pvs = group.get("physical_volumes")
        volumes = group.get("logical_volumes", {})
        if not isinstance(extent, int) or extent <= 0 or not isinstance(pvs, dict):
            continue
        if len(pvs) != 1 or not isinstance(volumes, dict):
            continue
        ((pv_name, pv),) = pvs.items()
        pe_start = pv.get("pe_start") if isinstance(pv, dict) else None
        if not isinstance(pe_start, int) or pe_start < 0:
            continue
        for name, volume in volumes.items():
            segment = volume.get("segment1") if isinstance(volume, dict) else None
            if not isinstance(segment, dict) or volume.get("segment_count") != 1:
                continue
            stripes = segment.get("stripes")
            count = segment.get("extent_count")
            if (
                segment.get("type") != "striped"
                or segment.get("stripe_count") != 1
                or not isinstance(stripes, list)
                or len(stripes) != 2
                or stripes[0] != pv_name
                or not isinstance(stripes[1], int)
                or not isinstance(count, int)
                or stripes[1] < 0
                or count <= 0
            ):
                continue
            offset = (pe_start + stripes[1] * extent) * SECTOR
            found.append(LogicalVolume(group_name, name, offset, count * extent * SECTOR))
    return found
