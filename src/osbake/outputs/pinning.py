"""Fixed values for what qemu-img writes at random or from the clock into disk formats.

qemu-img converts the raw disk into the same data blocks every time, but stamps some
formats' headers: VMDK's descriptor gets a random content id (CID) and names the
file qemu-img wrote (osbake's partial file, whose name is unique per build); VHD's
footer gets the time and a random UUID; VHDX's two headers get random write GUIDs
and sequence numbers, its metadata a random disk id (page 83 data), and its log
region a stale entry of the creation. These functions overwrite those fields, in
place, with values the caller derives from the recipe (osbake.disk.layout's
identifiers) and the build's epoch, and recompute the checksums that cover them.
Each format is read and checked first: a layout other than the one described here
is an error, never a silent half-pinned file.
"""

from __future__ import annotations

import re
import struct
import uuid
from pathlib import Path
from typing import BinaryIO

from osbake.errors import OutputError

SECTOR = 512


# -- VMDK --------------------------------------------------------------------------------------

VMDK_MAGIC = b"KDMV"


def pin_vmdk(path: Path, *, cid: int, extent_name: str) -> None:
    """Set the descriptor's CID and the extent's file name (streamOptimized/monolithic)."""
    with path.open("r+b") as handle:
        header = handle.read(SECTOR)
        if header[:4] != VMDK_MAGIC:
            raise OutputError(f"{path.name} is not a VMDK sparse extent (no KDMV header)")
        offset, size = struct.unpack_from("<QQ", header, 28)
        if not offset or not size:
            raise OutputError(f"{path.name} has no embedded descriptor")
        handle.seek(offset * SECTOR)
        region = handle.read(size * SECTOR)
        text = region.rstrip(b"\0").decode("ascii")
        text, cids = re.subn(r"(?m)^CID=[0-9a-fA-F]+$", f"CID={cid:08x}", text)
        name = extent_name.replace('"', "")
        text, extents = re.subn(
            r'(?m)^(RW|RDONLY|NOACCESS) (\d+) (SPARSE|FLAT) "[^"\n]*"',
            lambda m: f'{m.group(1)} {m.group(2)} {m.group(3)} "{name}"',
            text,
        )
        data = text.encode("ascii")
        if cids != 1 or extents != 1 or len(data) > len(region):
            raise OutputError(f"{path.name}: unexpected VMDK descriptor, cannot pin its CID")
        handle.seek(offset * SECTOR)
        handle.write(data + bytes(len(region) - len(data)))


# -- VHD ---------------------------------------------------------------------------------------

VHD_COOKIE = b"conectix"
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z: VHD counts its time from here


def vhd_checksum(footer: bytes) -> int:
    """The ones' complement of the sum of the footer's bytes, without its checksum field."""
    return ~(sum(footer[:64]) + sum(footer[68:])) & 0xFFFFFFFF


def _pinned_vhd_footer(footer: bytes, epoch: int, disk_id: uuid.UUID) -> bytes:
    data = bytearray(footer)
    struct.pack_into(">I", data, 24, max(0, epoch - VHD_EPOCH) & 0xFFFFFFFF)
    data[68:84] = disk_id.bytes
    struct.pack_into(">I", data, 64, vhd_checksum(bytes(data)))
    return bytes(data)


def pin_vhd(path: Path, *, epoch: int, disk_id: uuid.UUID) -> None:
    """Set the footer's time stamp and UUID (and its copy at the start, if dynamic)."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size - SECTOR)
        footer = handle.read(SECTOR)
        if footer[:8] != VHD_COOKIE:
            raise OutputError(f"{path.name} has no VHD footer")
        pinned = _pinned_vhd_footer(footer, epoch, disk_id)
        handle.seek(size - SECTOR)
        handle.write(pinned)
        handle.seek(0)
        if handle.read(8) == VHD_COOKIE:  # dynamic disks copy the footer to the start
            handle.seek(0)
            handle.write(pinned)


# -- VHDX --------------------------------------------------------------------------------------

KiB = 1024
VHDX_HEADERS = (64 * KiB, 128 * KiB)
VHDX_HEADER_SIZE = 4 * KiB
VHDX_REGION_TABLE = 192 * KiB
VHDX_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
VHDX_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
VHDX_IDS = ("file_write", "data_write", "page83")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as VHDX checksums its headers."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _guid_bytes(value: uuid.UUID) -> bytes:
    """A GUID as VHDX (Microsoft) stores it: the first three fields little-endian."""
    return value.bytes_le


def pin_vhdx(path: Path, *, ids: dict[str, uuid.UUID]) -> None:
    """Set both headers' write GUIDs and sequence numbers, the page 83 disk id, and clear
    the log (the headers' log GUID is zero: the log holds nothing to replay).

    `ids` gives the GUIDs for 'file_write', 'data_write' and 'page83'.
    """
    with path.open("r+b") as handle:
        headers = []
        for offset in VHDX_HEADERS:
            handle.seek(offset)
            headers.append(bytearray(handle.read(VHDX_HEADER_SIZE)))
        for header in headers:
            if header[:4] != b"head":
                raise OutputError(f"{path.name}: not a VHDX file (no header signature)")
            if any(header[48:64]):
                raise OutputError(f"{path.name}: the VHDX log is in use, it cannot be pinned")
        log_length, log_offset = struct.unpack_from("<IQ", headers[0], 68)
        sequence = [struct.unpack_from("<Q", header, 8)[0] for header in headers]
        newer = 0 if sequence[0] > sequence[1] else 1
        for index, (offset, header) in enumerate(zip(VHDX_HEADERS, headers, strict=True)):
            struct.pack_into("<Q", header, 8, 2 if index == newer else 1)
            header[16:32] = _guid_bytes(ids["file_write"])
            header[32:48] = _guid_bytes(ids["data_write"])
            struct.pack_into("<I", header, 4, 0)
            struct.pack_into("<I", header, 4, crc32c(bytes(header)))
            handle.seek(offset)
            handle.write(header)
        if log_length:
            handle.seek(log_offset)
            handle.write(bytes(log_length))
        _pin_page83(handle, path, _guid_bytes(ids["page83"]))


def _pin_page83(io: BinaryIO, path: Path, value: bytes) -> None:
    io.seek(VHDX_REGION_TABLE)
    table = io.read(64 * KiB)
    if table[:4] != b"regi":
        raise OutputError(f"{path.name}: the VHDX region table is missing")
    (count,) = struct.unpack_from("<I", table, 8)
    metadata = None
    for index in range(count):
        entry = 16 + 32 * index
        if uuid.UUID(bytes_le=table[entry : entry + 16]) == VHDX_METADATA_REGION:
            metadata = struct.unpack_from("<Q", table, entry + 16)[0]
    if metadata is None:
        raise OutputError(f"{path.name}: the VHDX has no metadata region")
    io.seek(metadata)
    items = io.read(64 * KiB)
    if items[:8] != b"metadata":
        raise OutputError(f"{path.name}: the VHDX metadata table is missing")
    (count,) = struct.unpack_from("<H", items, 10)
    for index in range(count):
        entry = 32 + 32 * index
        if uuid.UUID(bytes_le=items[entry : entry + 16]) == VHDX_PAGE83:
            offset, length = struct.unpack_from("<II", items, entry + 16)
            if length != 16:
                raise OutputError(f"{path.name}: unexpected VHDX page 83 data")
            io.seek(metadata + offset)
            io.write(value)
            return
    raise OutputError(f"{path.name}: the VHDX has no page 83 data")
