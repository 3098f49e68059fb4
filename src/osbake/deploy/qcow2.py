"""A streaming reader of qcow2 images: the disk's content, cluster by cluster, holes skipped.

Reading the format directly (instead of `qemu-img convert` to a temporary raw
file) lets deploy stream straight to the disk, skip unallocated and zero
clusters without looking at them, hash what it writes and report progress.

Supported: versions 2 and 3, zlib- and zstd-compressed clusters, zero clusters, extended
L2 entries (subclusters). Refused with a clear message: backing files,
encryption and external data files (qemu-img can convert those
to a plain qcow2 or raw first). See docs/interop/qcow2.txt in QEMU's sources.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from osbake.errors import ArtifactError

COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1

MAGIC = b"QFI\xfb"
OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00  # bits 9-55: host offsets of tables and clusters
L2_COMPRESSED = 1 << 62
L2_ZERO = 1  # v3 standard cluster: reads as zeros
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
KNOWN_INCOMPAT = (
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
)
MAX_RUN = 8 << 20  # coalesce contiguous clusters into reads of at most this size
MAX_L1_BYTES = 32 << 20  # QEMU's own limit (QCOW_MAX_L1_SIZE): the table is read whole
CONVERT_HINT = (
    "convert it to a self-contained, unencrypted qcow2 first: "
    "qemu-img convert -O qcow2 IMAGE plain.qcow2"
)


@dataclass(frozen=True)
class Header:
    version: int
    cluster_bits: int
    size: int
    l1_size: int
    l1_offset: int
    incompatible: int
    compression_type: int
    backing_file: str | None
    encrypted: bool

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible & INCOMPAT_EXTL2)


def is_qcow2(head: bytes) -> bool:
    return head[:4] == MAGIC


def read_header(handle: BinaryIO, name: str) -> Header:
    handle.seek(0)
    raw = handle.read(112)
    if len(raw) < 72 or raw[:4] != MAGIC:
        raise ArtifactError(f"{name} is not a qcow2 image (bad header)")
    (
        version,
        backing_offset,
        backing_size,
        cluster_bits,
        size,
        crypt_method,
        l1_size,
        l1_offset,
    ) = struct.unpack(">IQIIQIIQ", raw[4:48])
    if version not in (2, 3):
        raise ArtifactError(f"{name}: qcow2 version {version} is not supported")
    if not 9 <= cluster_bits <= 21:
        raise ArtifactError(f"{name}: qcow2 cluster size 2^{cluster_bits} is invalid")
    if l1_size * 8 > MAX_L1_BYTES:
        raise ArtifactError(
            f"{name}: its qcow2 L1 table ({l1_size} entries) is larger than QEMU allows",
            hint="the file is damaged or crafted",
        )
    incompatible = 0
    compression_type = 0
    if version == 3:
        if len(raw) < 104:
            raise ArtifactError(f"{name}: truncated qcow2 v3 header")
        (incompatible,) = struct.unpack(">Q", raw[72:80])
        (header_length,) = struct.unpack(">I", raw[100:104])
        if header_length > 104 and len(raw) > 104:
            compression_type = raw[104]
    backing_file = None
    if backing_offset:
        handle.seek(backing_offset)
        backing_file = handle.read(backing_size).decode("utf-8", "replace")
    header = Header(
        version=version,
        cluster_bits=cluster_bits,
        size=size,
        l1_size=l1_size,
        l1_offset=l1_offset,
        incompatible=incompatible,
        compression_type=compression_type,
        backing_file=backing_file,
        encrypted=crypt_method != 0,
    )
    _refuse_unsupported(header, name)
    return header


def _refuse_unsupported(header: Header, name: str) -> None:
    if header.backing_file:
        raise ArtifactError(
            f"{name} is a qcow2 overlay on a backing file ({header.backing_file}); "
            "osbake reads the whole disk from one file",
            hint=CONVERT_HINT,
        )
    if header.encrypted:
        raise ArtifactError(f"{name} is an encrypted qcow2 image", hint=CONVERT_HINT)
    if header.incompatible & INCOMPAT_CORRUPT:
        raise ArtifactError(
            f"{name} is marked corrupt by QEMU",
            hint="check it with 'qemu-img check -r all' or rebuild it",
        )
    if header.incompatible & INCOMPAT_DATA_FILE:
        raise ArtifactError(f"{name} keeps its data in an external file", hint=CONVERT_HINT)
    if header.incompatible & ~KNOWN_INCOMPAT:
        raise ArtifactError(
            f"{name} uses qcow2 features osbake does not know "
            f"(incompatible bits {header.incompatible:#x})",
            hint=CONVERT_HINT,
        )
    if header.compression_type not in (COMPRESSION_ZLIB, COMPRESSION_ZSTD):
        raise ArtifactError(
            f"{name} uses an unknown cluster compression ({header.compression_type})",
            hint="qemu-img convert -O qcow2 -c -o compression_type=zlib IMAGE zlib.qcow2 "
            "(or convert it to raw)",
        )


class Qcow2Reader:
    """The guest-visible content of a qcow2 file, as (offset, data) runs in ascending order.

    Unallocated and zero clusters are not yielded: they read as zeros.
    """

    def __init__(self, handle: BinaryIO, name: str) -> None:
        self.handle = handle
        self.name = name
        self.header = read_header(handle, name)
        handle.seek(0, 2)
        self.file_size = handle.tell()

    @property
    def size(self) -> int:
        return self.header.size

    def _read(self, offset: int, length: int) -> bytes:
        self.handle.seek(offset)
        data = self.handle.read(length)
        if len(data) != length:
            raise ArtifactError(
                f"{self.name} is truncated: it ends at byte {self.file_size} but its "
                f"tables point to bytes up to {offset + length}",
                hint="the file was cut short (an interrupted copy?); fetch it again",
            )
        return data

    def _l1(self) -> list[int]:
        h = self.header
        entries_needed = -(-h.size // (h.cluster_size * self._l2_entries()))
        if h.l1_size < entries_needed:
            raise ArtifactError(f"{self.name}: the qcow2 L1 table is too small for its size")
        raw = self._read(h.l1_offset, h.l1_size * 8)
        return list(struct.unpack(f">{h.l1_size}Q", raw))

    def _l2_entries(self) -> int:
        return self.header.cluster_size // (16 if self.header.extended_l2 else 8)

    def clusters(self) -> Iterator[tuple[int, int, int | tuple[int, int] | None]]:
        """(guest offset, length, source) of every cluster or subcluster with data.

        source is a host offset (plain data) or (host offset, compressed length).
        """
        h = self.header
        cluster = h.cluster_size
        per_l2 = self._l2_entries()
        sub = cluster // 32 if h.extended_l2 else cluster
        csize_shift = 62 - (h.cluster_bits - 8)
        csize_mask = (1 << (h.cluster_bits - 8)) - 1
        coffset_mask = (1 << csize_shift) - 1
        for l1_index, l1_entry in enumerate(self._l1()):
            l2_offset = l1_entry & OFFSET_MASK
            base = l1_index * per_l2 * cluster
            if base >= h.size:
                break
            if not l2_offset:
                continue
            table = self._read(l2_offset, cluster)
            if h.extended_l2:
                values = struct.unpack(f">{per_l2 * 2}Q", table)
            else:
                values = struct.unpack(f">{per_l2}Q", table)
            for index in range(per_l2):
                guest = base + index * cluster
                if guest >= h.size:
                    break
                entry = values[index * 2] if h.extended_l2 else values[index]
                if entry & L2_COMPRESSED:
                    host = entry & coffset_mask
                    sectors = ((entry >> csize_shift) & csize_mask) + 1
                    length = sectors * 512 - (host & 511)
                    yield guest, min(cluster, h.size - guest), (host, length)
                    continue
                host = entry & OFFSET_MASK
                if h.extended_l2:
                    bitmap = values[index * 2 + 1]
                    if not host:
                        continue
                    for s in range(32):
                        if bitmap & (1 << s) and not bitmap & (1 << (32 + s)):
                            start = guest + s * sub
                            if start < h.size:
                                yield start, min(sub, h.size - start), host + s * sub
                    continue
                if entry & L2_ZERO or not host:
                    continue
                if host & (cluster - 1):
                    raise ArtifactError(
                        f"{self.name}: a qcow2 data cluster is misaligned (corrupt table)"
                    )
                yield guest, min(cluster, h.size - guest), host

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        """The data, as (guest offset, bytes), contiguous runs merged into large reads."""
        run_guest = run_host = run_length = 0
        cluster = self.header.cluster_size
        decompressor_wbits = -12
        for guest, length, source in self.clusters():
            if isinstance(source, tuple):
                if run_length:
                    yield run_guest, self._read(run_host, run_length)
                    run_length = 0
                host, clength = source
                compressed = self._read_compressed(host, clength)
                try:
                    if self.header.compression_type == COMPRESSION_ZSTD:
                        # A cluster is one zstd frame; what follows it is padding.
                        data = zstandard.ZstdDecompressor().decompressobj().decompress(compressed)
                    else:
                        inflater = zlib.decompressobj(decompressor_wbits)
                        data = inflater.decompress(compressed, cluster)
                except (zlib.error, zstandard.ZstdError) as exc:
                    raise ArtifactError(
                        f"{self.name}: a compressed cluster at guest offset {guest} is "
                        f"corrupt ({exc})",
                        hint="the file is damaged; fetch or build it again",
                    ) from None
                if len(data) < length:
                    raise ArtifactError(
                        f"{self.name}: a compressed cluster at guest offset {guest} is short"
                    )
                yield guest, data[:length]
                continue
            assert isinstance(source, int)
            if (
                run_length
                and guest == run_guest + run_length
                and source == run_host + run_length
                and run_length + length <= MAX_RUN
            ):
                run_length += length
                continue
            if run_length:
                yield run_guest, self._read(run_host, run_length)
            run_guest, run_host, run_length = guest, source, length
        if run_length:
            yield run_guest, self._read(run_host, run_length)

    def _read_compressed(self, host: int, length: int) -> bytes:
        # The last compressed cluster may end before its last 512-byte sector does.
        self.handle.seek(host)
        data = self.handle.read(length)
        if not data:
            raise ArtifactError(f"{self.name} is truncated inside a compressed cluster")
        return data


def open_qcow2(path: Path) -> Qcow2Reader:
    return Qcow2Reader(path.open("rb"), str(path))
