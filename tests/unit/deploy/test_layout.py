"""Partition tables read from an image's first bytes, and the room a seed partition needs."""

from __future__ import annotations

import struct
import uuid

from osbake.deploy.layout import (
    ESP,
    LINUX_DATA,
    Layout,
    Partition,
    read_layout,
    seed_partition_start,
    space_needed,
)

MIB = 1 << 20


def gpt_head(partitions: list[tuple[str, int, int, str]]) -> bytes:
    """Sectors 0-33 of a GPT disk: protective MBR, header, 128 entries."""
    head = bytearray(34 * 512)
    head[446 + 4] = 0xEE
    head[510:512] = b"\x55\xaa"
    header = b"EFI PART" + struct.pack(
        "<IIIIQQQQ16sQII", 0x10000, 92, 0, 0, 1, 0, 34, 0, bytes(16), 2, 128, 128
    )
    head[512 : 512 + len(header)] = header
    for index, (type_guid, first, last, name) in enumerate(partitions):
        entry = (
            uuid.UUID(type_guid).bytes_le
            + uuid.uuid4().bytes_le
            + struct.pack("<QQQ", first, last, 0)
            + name.encode("utf-16-le").ljust(72, b"\0")
        )
        start = 1024 + index * 128
        head[start : start + 128] = entry
    return bytes(head)


def mbr_head(partitions: list[tuple[int, int, int]]) -> bytes:
    head = bytearray(512)
    for index, (kind, first, count) in enumerate(partitions):
        entry = bytes(4) + bytes([kind]) + bytes(3) + struct.pack("<II", first, count)
        head[446 + 16 * index : 446 + 16 * (index + 1)] = entry
    head[510:512] = b"\x55\xaa"
    return bytes(head)


def test_gpt() -> None:
    layout = read_layout(gpt_head([(ESP, 2048, 18431, "esp"), (LINUX_DATA, 18432, 98270, "root")]))
    assert layout.table == "gpt"
    assert [p.number for p in layout.partitions] == [1, 2]
    assert layout.partitions[0] == Partition(1, 2048, 18431, ESP, "esp")
    assert layout.last is not None
    assert layout.last.name == "root"
    assert layout.used_end == 98270
    assert layout.free_number() == 3


def test_mbr() -> None:
    layout = read_layout(mbr_head([(0xEF, 2048, 16384), (0x83, 18432, 80000)]))
    assert layout.table == "dos"
    assert layout.partitions[1] == Partition(2, 18432, 98431, "83")
    assert layout.free_number() == 3


def test_protective_mbr_without_gpt_and_no_table() -> None:
    assert read_layout(mbr_head([(0xEE, 1, 1000)])).table is None
    assert read_layout(bytes(4096)).table is None


def test_seed_partition_ends_the_disk_aligned() -> None:
    first, last = seed_partition_start("gpt", 200 * MIB, 400_000)
    assert first % 2048 == 0
    assert last == 200 * MIB // 512 - 1 - 33
    assert (last - first + 1) * 512 >= 400_000
    first, last = seed_partition_start("dos", 200 * MIB, 400_000)
    assert last == 200 * MIB // 512 - 1


def test_space_needed_makes_room_for_the_seed() -> None:
    layout = Layout("gpt", (Partition(1, 2048, 98270, LINUX_DATA),))
    image = 48 * MIB
    assert space_needed(layout, image, None) == image
    needed = space_needed(layout, image, 400_000)
    first, _last = seed_partition_start("gpt", needed, 400_000)
    assert first > 98270
    # One sector less and the seed would overlap the last partition.
    first, _ = seed_partition_start("gpt", needed - 512 * 2048, 400_000)
    assert first <= 98270
