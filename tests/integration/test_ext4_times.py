"""The ext4 inode times osbake sets with debugfs are the times it means (real debugfs).

debugfs reads a bare number as a date (YYYYMMDD...), not as seconds: 1764374000 became
the year 2308, which 32-bit userlands (Debian i386's systemd) cannot stat (EOVERFLOW).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from osbake.disk.filesystems import settle_ext4_times
from osbake.events import Events

pytestmark = pytest.mark.integration

EPOCH = 1764374000  # 2025-11-28


def test_every_inode_gets_the_clamped_times(tmp_path: Path) -> None:
    source = tmp_path / "tree"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "old").write_text("old\n")
    (source / "etc" / "new").write_text("new\n")
    os.utime(source / "etc" / "old", (1_000_000_000, 1_000_000_000))  # kept: before the epoch
    os.utime(source / "etc" / "new", (EPOCH + 10**6, EPOCH + 10**6))  # clamped to the epoch
    image = tmp_path / "fs.img"
    image.write_bytes(b"\0" * 4096)  # an offset in front, as in a disk image
    with image.open("r+b") as handle:
        handle.truncate(4096 + 16 * 1024 * 1024)
    subprocess.run(
        ["mkfs.ext4", "-q", "-E", "offset=4096", "-d", str(source), str(image), "16M"],
        check=True,
    )
    settle_ext4_times(image, 4096, source, EPOCH, tmp_path, Events())

    def times(path: str) -> dict[str, int]:
        out = subprocess.run(
            ["debugfs", "-R", f"stat {path}", f"{image}?offset=4096"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {
            name: int(value, 16)
            for name, value in re.findall(r"\b(ctime|atime|mtime): 0x([0-9a-f]+):", out)
        }

    assert times("/etc/old") == {
        "ctime": 1_000_000_000,
        "atime": 1_000_000_000,
        "mtime": 1_000_000_000,
    }
    assert times("/etc/new") == {"ctime": EPOCH, "atime": EPOCH, "mtime": EPOCH}
