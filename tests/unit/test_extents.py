"""The one extent walker (SEEK_DATA/SEEK_HOLE) and align_up/align_down."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbake import extents
from osbake.extents import align_down, align_up, data_extents

MiB = 1 << 20


@pytest.fixture
def sparse(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A 64 MiB file with data only at [8 MiB, 9 MiB) and [40 MiB, 40 MiB + 3)."""
    path = tmp_path / "sparse.img"
    with path.open("wb") as handle:
        handle.truncate(64 * MiB)
        handle.seek(8 * MiB)
        handle.write(b"a" * MiB)
        handle.seek(40 * MiB)
        handle.write(b"bcd")
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd, 64 * MiB
    finally:
        os.close(fd)


def covered(ranges: list[tuple[int, int]]) -> int:
    return sum(end - start for start, end in ranges)


def test_a_sparse_file_gives_its_data_and_skips_its_holes(sparse: tuple[int, int]) -> None:
    fd, size = sparse
    ranges = list(data_extents(fd, size))
    assert ranges == sorted(ranges)
    assert all(0 <= start < end <= size for start, end in ranges)
    # Every byte written is inside a range (filesystems may round extents up to a page
    # or a block), and most of the file is skipped.
    for offset in (8 * MiB, 9 * MiB - 1, 40 * MiB, 40 * MiB + 2):
        assert any(start <= offset < end for start, end in ranges), offset
    assert covered(ranges) < 4 * MiB
    assert not any(start <= 20 * MiB < end for start, end in ranges)


def test_a_window_is_clipped_to_start_and_end(sparse: tuple[int, int]) -> None:
    fd, _ = sparse
    ranges = list(data_extents(fd, 40 * MiB + 1, start=8 * MiB + 100))
    assert ranges[0][0] == 8 * MiB + 100
    assert ranges[-1][1] == 40 * MiB + 1
    assert list(data_extents(fd, 30 * MiB, start=20 * MiB)) == []
    assert list(data_extents(fd, 10, start=10)) == []


def test_a_file_without_holes_is_one_range(tmp_path: Path) -> None:
    path = tmp_path / "full.img"
    path.write_bytes(os.urandom(3 * MiB + 5))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert list(data_extents(fd, 3 * MiB + 5)) == [(0, 3 * MiB + 5)]
    finally:
        os.close(fd)


def test_a_file_of_only_a_hole_has_no_data(tmp_path: Path) -> None:
    path = tmp_path / "empty.img"
    with path.open("wb") as handle:
        handle.truncate(16 * MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert list(data_extents(fd, 16 * MiB)) == []
    finally:
        os.close(fd)


def test_a_device_is_data_throughout() -> None:
    # fstat of a device says nothing about holes (a block device's size is even 0).
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        assert list(data_extents(fd, 10 * MiB)) == [(0, 10 * MiB)]
        assert list(data_extents(fd, 10 * MiB, start=MiB)) == [(MiB, 10 * MiB)]
    finally:
        os.close(fd)


def test_a_block_device_is_data_throughout(
    monkeypatch: pytest.MonkeyPatch, sparse: tuple[int, int]
) -> None:
    fd, size = sparse
    real = os.fstat(fd)
    fields = list(real)
    fields[stat.ST_MODE] = stat.S_IFBLK | 0o660
    monkeypatch.setattr(extents.os, "fstat", lambda _fd: os.stat_result(fields))
    monkeypatch.setattr(extents.os, "lseek", lambda *a: pytest.fail("seeked a block device"))
    assert list(data_extents(fd, size)) == [(0, size)]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_where_seek_data_is_unsupported_the_rest_is_data(
    monkeypatch: pytest.MonkeyPatch, sparse: tuple[int, int], code: int
) -> None:
    fd, size = sparse

    def lseek(fd: int, offset: int, whence: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(extents.os, "lseek", lseek)
    assert list(data_extents(fd, size)) == [(0, size)]
    assert list(data_extents(fd, size, start=MiB)) == [(MiB, size)]


def test_other_errors_are_not_taken_for_data(
    monkeypatch: pytest.MonkeyPatch, sparse: tuple[int, int]
) -> None:
    fd, size = sparse

    def lseek(fd: int, offset: int, whence: int) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(extents.os, "lseek", lseek)
    with pytest.raises(OSError, match="I/O error"):
        list(data_extents(fd, size))


@pytest.mark.parametrize(
    ("value", "alignment", "up", "down"),
    [
        (0, 4096, 0, 0),
        (1, 4096, 4096, 0),
        (4096, 4096, 4096, 4096),
        (4097, 4096, 8192, 4096),
        (3 * MiB - 1, MiB, 3 * MiB, 2 * MiB),
        (2047, 2048, 2048, 0),
    ],
)
def test_align(value: int, alignment: int, up: int, down: int) -> None:
    assert align_up(value, alignment) == up
    assert align_down(value, alignment) == down
