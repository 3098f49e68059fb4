"""Hidden folders (the mount points of other partitions) stay distinct in a btrfs image.

`mkfs.btrfs --rootdir` numbers the image's inodes by the source's inode numbers;
with a tmpfs over each hidden folder, /boot/efi and /var (both tmpfs roots, inode
1) became one directory with two names, and the booted image mounted its ESP on
/var. This makes a btrfs the way a partition is made and reads its directory
entries back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from osbake import sandbox
from osbake.disk import filesystems
from osbake.events import Events

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.btrfs") is None,
    reason="needs root (mounts) and mkfs.btrfs (btrfs-progs)",
)


def links(image: Path) -> list[tuple[int, str, int]]:
    """(parent inode, name, inode) of every directory entry (from the metadata, no mount)."""
    dump = subprocess.run(
        ["btrfs", "inspect-internal", "dump-tree", "-t", "fs", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: list[tuple[int, str, int]] = []
    parent = inode = None
    for line in dump.splitlines():
        item = re.search(r"key \((\d+) (\w+) \d+\) itemoff", line)
        if item:
            parent = int(item.group(1)) if item.group(2) == "DIR_INDEX" else None
            inode = None
        location = re.search(r"location key \((\d+) INODE_ITEM 0\)", line)
        if location and parent is not None:
            inode = int(location.group(1))
        name = re.search(r"name: (\S+)", line)
        if name and parent is not None and inode is not None:
            found.append((parent, name.group(1), inode))
            parent = inode = None
    return found


def test_each_hidden_folder_is_its_own_empty_folder(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for folder in ("boot/efi/EFI", "var/lib", "srv/data", "etc"):
        (tree / folder).mkdir(parents=True)
    (tree / "var/lib/secret").write_text("belongs to the /var partition")
    (tree / "etc/hostname").write_text("demo\n")
    image = tmp_path / "root.img"
    with sandbox.hidden(tree, ["/boot/efi", "/var", "/srv/data"]):
        assert list((tree / "var").iterdir()) == []
        with pytest.raises(OSError):
            (tree / "var/new").write_text("x")  # read-only
        filesystems.make_in_file(
            "btrfs",
            image,
            128 << 20,
            tree,
            label=None,
            uuid="4eeb44f5-b07b-55e7-ab3a-18c477be643f",
            events=Events(),
        )
    # Everything is back, nothing is left mounted.
    assert (tree / "var/lib/secret").is_file()
    assert not [
        line
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if "osbake-hidden" in line
    ]
    found = links(image)
    top = {name: inode for parent, name, inode in found if parent == 256}
    assert {"boot", "var", "srv", "etc"} <= set(top), found
    hidden = {name: inode for _, name, inode in found if name in ("efi", "var", "data")}
    assert len(hidden) == 3, found
    # One directory per hidden folder: no inode has two names.
    assert len(set(hidden.values())) == 3, hidden
    inodes = [inode for _, _, inode in found]
    assert len(inodes) == len(set(inodes)), found
