"""Writing data runs to a target: zeros skipped, digests that match what is read back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from osbake.deploy.writer import BLOCK, GRAIN, BlockDigest, DiskWriter, read_back_digest

MIB = 1 << 20


def write(path: Path, size: int, runs: list[tuple[int, bytes]], *, zero_fill: bool) -> DiskWriter:
    fd = os.open(path, os.O_RDWR)
    try:
        writer = DiskWriter(fd, size, zero_fill=zero_fill, digest=BlockDigest())
        writer.write_all(runs)
        return writer
    finally:
        os.close(fd)


def test_block_digest_is_the_same_for_zeros_fed_either_way() -> None:
    fed = BlockDigest()
    fed.update(b"a" * 100)
    fed.update(bytes(2 * BLOCK + 7))
    skipped = BlockDigest()
    skipped.update(b"a" * 100)
    skipped.zeros(2 * BLOCK + 7)
    assert fed.hexdigest() == skipped.hexdigest()
    assert fed.length == skipped.length == 2 * BLOCK + 107
    manual = hashlib.sha256()
    data = b"a" * 100 + bytes(2 * BLOCK + 7)
    for start in range(0, len(data), BLOCK):
        manual.update(hashlib.sha256(data[start : start + BLOCK]).digest())
    assert fed.hexdigest() == manual.hexdigest()


def test_zeros_are_not_written_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.touch()
    os.truncate(target, 16 * MIB)
    data = bytes(GRAIN) + b"x" * GRAIN + bytes(3 * GRAIN) + b"y" * 10
    writer = write(target, 16 * MIB, [(MIB, data)], zero_fill=False)
    assert writer.written == GRAIN + 10
    assert writer.skipped == 16 * MIB - writer.written
    content = target.read_bytes()
    assert content[MIB + GRAIN : MIB + 2 * GRAIN] == b"x" * GRAIN
    assert content[MIB + 5 * GRAIN : MIB + 5 * GRAIN + 10] == b"y" * 10
    assert content.count(0) == len(content) - writer.written
    # Only the data was allocated: the file stays sparse.
    assert os.stat(target).st_blocks * 512 < 2 * MIB


def test_zero_fill_clears_what_was_there(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"\xee" * (4 * MIB))
    write(target, 4 * MIB, [(MIB + 3, b"data")], zero_fill=True)
    content = target.read_bytes()
    assert content[MIB + 3 : MIB + 7] == b"data"
    assert content.count(0) == 4 * MIB - 4


def test_read_back_digest_matches_the_written_one(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(bytes(10 * MIB + 512))
    size = 10 * MIB + 512
    runs = [(0, b"head" * 1000), (5 * MIB, os.urandom(3 * MIB)), (size - 512, b"tail")]
    writer = write(target, size, runs, zero_fill=True)
    assert writer.digest is not None
    written = writer.digest.hexdigest()
    assert read_back_digest(target, size) == written
    with target.open("r+b") as handle:
        handle.seek(7 * MIB)
        handle.write(b"!")
    assert read_back_digest(target, size) != written


def test_runs_out_of_order_are_a_bug(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(bytes(MIB))
    fd = os.open(target, os.O_RDWR)
    try:
        writer = DiskWriter(fd, MIB, zero_fill=False)
        writer.write(4096, b"a")
        with pytest.raises(ValueError, match="out of order"):
            writer.write(0, b"b")
    finally:
        os.close(fd)
