"""Where a file holds data, and alignment: the one extent walker and align_up/align_down.

Copies, checksums and uploads of disk images skip the holes of sparse files; they
all ask `data_extents` where the data is. A block device, a pipe, or a file on a
filesystem that cannot tell (SEEK_DATA gives EINVAL or EOPNOTSUPP) is data
throughout, so nothing is ever skipped that might hold data.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

# SEEK_DATA is not supported here: treat everything from there on as data.
_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ESPIPE}


def data_extents(fd: int, end: int, start: int = 0) -> Iterator[tuple[int, int]]:
    """The (start, end) byte ranges of `fd` within [start, end) that hold data, in order.

    `end` is given (a block device's fstat says size 0). Holes are left out; where the
    file cannot tell (not a regular file, or SEEK_DATA unsupported) the rest is one
    range of data.
    """
    if start >= end:
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        yield start, end
        return
    offset = start
    while offset < end:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            if exc.errno in _UNSUPPORTED:
                yield offset, end
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole
        offset = hole


def align_up(value: int, alignment: int) -> int:
    """The smallest multiple of `alignment` that is at least `value`."""
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    """The largest multiple of `alignment` that is at most `value`."""
    return value // alignment * alignment
