"""Writing an image's data runs to the target, skipping zeros, and checking it afterwards.

Zero blocks are never written: in a file target (made all zeros up front) they
stay holes; on a block device they are zeroed by the disk itself (BLKZEROOUT),
which costs nothing on SSDs and thin volumes. While writing, a digest of the
image's full content is computed; `--verify` reads the target back and must
find the same digest.

The digest is a sha256 over the sha256 of each 4 MiB block, so that zero
blocks cost a comparison instead of hashing (the result is the same either way:
the digest of a block of zeros is just sha256 of zeros).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from osbake.deploy.target import zero_range
from osbake.extents import data_extents

BLOCK = 4 << 20  # digest block
GRAIN = 64 * 1024  # zero detection granularity
ZERO_GRAIN = bytes(GRAIN)
ZERO_BLOCK = bytes(BLOCK)
ZERO_BLOCK_DIGEST = hashlib.sha256(ZERO_BLOCK).digest()

Progress = Callable[[int], None]


class BlockDigest:
    """sha256 of the per-4-MiB-block sha256s of a byte stream fed in order."""

    def __init__(self) -> None:
        self._outer = hashlib.sha256()
        self._block = hashlib.sha256()
        self._fill = 0
        self.length = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view.nbytes:
            take = min(view.nbytes, BLOCK - self._fill)
            self._block.update(view[:take])
            self._fill += take
            self.length += take
            view = view[take:]
            if self._fill == BLOCK:
                self._close()

    def zeros(self, length: int) -> None:
        while length:
            if self._fill == 0 and length >= BLOCK:
                self._outer.update(ZERO_BLOCK_DIGEST)
                self.length += BLOCK
                length -= BLOCK
                continue
            take = min(length, BLOCK - self._fill)
            self.update(memoryview(ZERO_BLOCK)[:take])
            length -= take

    def _close(self) -> None:
        self._outer.update(self._block.digest())
        self._block = hashlib.sha256()
        self._fill = 0

    def hexdigest(self) -> str:
        if self._fill:
            self._close()
        return self._outer.hexdigest()


class _Throttle:
    def __init__(self, progress: Progress | None, interval: float = 0.2) -> None:
        self.progress = progress
        self.interval = interval
        self.last = 0.0

    def __call__(self, done: int, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            self.progress(done)


class DiskWriter:
    """Writes (offset, data) runs to a target fd; gaps and zero blocks become zeros."""

    def __init__(
        self,
        fd: int,
        size: int,
        *,
        zero_fill: bool,
        digest: BlockDigest | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.fd = fd
        self.size = size
        self.zero_fill = zero_fill  # the target is not zero already: zero what is skipped
        self.digest = digest
        self.position = 0
        self.written = 0
        self.skipped = 0
        self._zero_start: int | None = None
        self._tick = _Throttle(progress)

    def write_all(self, runs: Iterable[tuple[int, bytes]]) -> None:
        for offset, data in runs:
            self.write(offset, data)
        self.finish()

    def write(self, offset: int, data: bytes) -> None:
        if offset < self.position:
            raise ValueError(f"runs out of order: {offset} < {self.position}")
        if offset > self.position:
            self._zeros(offset - self.position)
        # Compare bytes, not memoryviews: bytes equality is a memcmp, 100 times faster.
        buf = data if isinstance(data, bytes) else bytes(data)
        view = memoryview(buf)
        total = min(len(buf), self.size - offset)
        start = 0
        while start < total:
            end = min(start + GRAIN, total)
            if buf[start:end] == ZERO_GRAIN[: end - start]:
                self._zeros(end - start)
                start = end
                continue
            # Extend over the following non-zero grains and write them in one go.
            run_end = end
            while run_end < total:
                nxt = min(run_end + GRAIN, total)
                if buf[run_end:nxt] == ZERO_GRAIN[: nxt - run_end]:
                    break
                run_end = nxt
            self._data(view[start:run_end])
            start = run_end
        self._tick(self.position)

    def _zeros(self, length: int) -> None:
        if self._zero_start is None:
            self._zero_start = self.position
        if self.digest is not None:
            self.digest.zeros(length)
        self.position += length
        self.skipped += length

    def _flush_zeros(self) -> None:
        if self._zero_start is not None and self.zero_fill:
            zero_range(self.fd, self._zero_start, self.position - self._zero_start)
        self._zero_start = None

    def _data(self, view: memoryview) -> None:
        self._flush_zeros()
        offset = self.position
        remaining = view
        while remaining.nbytes:
            done = os.pwrite(self.fd, remaining, offset)
            offset += done
            remaining = remaining[done:]
        if self.digest is not None:
            self.digest.update(view)
        self.position += view.nbytes
        self.written += view.nbytes

    def finish(self) -> None:
        if self.position < self.size:
            self._zeros(self.size - self.position)
        self._flush_zeros()
        os.fsync(self.fd)
        self._tick(self.position, force=True)


def read_back_digest(path: Path, size: int, progress: Progress | None = None) -> str:
    """The block digest of the target's first `size` bytes, read from the disk itself.

    Reads bypass the page cache (O_DIRECT) where the target allows it, so what is
    checked is what the disk holds; holes of a file target are zeros by definition
    and are not read.
    """
    buffered = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        direct: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
    except OSError:
        direct = None
    try:
        # Without O_DIRECT: drop the written pages so the disk is read, read ahead far.
        os.posix_fadvise(buffered, 0, size, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(buffered, 0, size, os.POSIX_FADV_SEQUENTIAL)
        return _digest_ranges(buffered, direct, size, _Throttle(progress))
    finally:
        os.close(buffered)
        if direct is not None:
            os.close(direct)


def _digest_ranges(buffered: int, direct: int | None, size: int, tick: _Throttle) -> str:
    digest = BlockDigest()
    # One page-aligned buffer for every read (O_DIRECT needs the alignment, and a fresh
    # 4 MiB object per read would cost more than the read).
    buffer = mmap.mmap(-1, BLOCK)
    offset = 0
    for start, end in data_extents(buffered, size):
        if start > offset:
            digest.zeros(start - offset)
            offset = start
        while offset < end:
            length = min(BLOCK - offset % BLOCK, end - offset)
            aligned = offset % 4096 == 0 and length % 4096 == 0
            with memoryview(buffer)[:length] as piece:
                try:
                    if direct is not None and aligned:
                        got = os.preadv(direct, [piece], offset)
                    else:
                        got = os.preadv(buffered, [piece], offset)
                except OSError as exc:
                    if direct is None or exc.errno != errno.EINVAL:
                        raise
                    direct = None  # the target does not do O_DIRECT after all
                    continue
                if got != length:
                    raise OSError(f"short read at byte {offset} of the target")
                # Slicing the mmap gives bytes, whose comparison is a memcmp.
                if length == BLOCK and buffer[:BLOCK] == ZERO_BLOCK:
                    digest.zeros(length)
                else:
                    digest.update(piece)
            offset += length
            tick(offset)
    if offset < size:
        digest.zeros(size - offset)
    tick(size, force=True)
    buffer.close()
    return digest.hexdigest()
