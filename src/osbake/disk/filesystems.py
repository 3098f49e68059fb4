"""File systems made offline from a folder, straight into the disk image file.

ext4 is made with `mkfs.ext4 -d` at the partition's offset (-E offset), vfat with
mkfs.vfat --offset and mtools, btrfs with `mkfs.btrfs --rootdir` in its own file
(it has no offset option) copied into place, swap with mkswap likewise.

Sizes are computed from the folder: every file's blocks, directories, inodes, and
the file system's own metadata (bitmaps, inode tables, group descriptors, journal)
as mkfs lays them out, plus the free space asked for. No percentage guess.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from osbake import run as runner
from osbake.disk.sizes import MiB, align_up, format_size
from osbake.errors import OsbakeError
from osbake.events import Events
from osbake.extents import data_extents

BLOCK = 4096
INODE_SIZE = 256
BLOCKS_PER_GROUP = 32768
EXT4_FEATURES = "has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize"
# Our own mke2fs.conf, so the host's defaults (which change between releases) do not
# decide what the image's GRUB and e2fsck must read.
MKE2FS_CONF = f"""\
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = {BLOCK}
	inode_size = {INODE_SIZE}
	inode_ratio = 16384

[fs_types]
	ext4 = {{
		features = {EXT4_FEATURES}
	}}
"""


class FilesystemError(OsbakeError):
    """A file system could not be made."""


@dataclass
class TreeUsage:
    """What a folder needs on disk, counted the way ext4 stores it."""

    data_blocks: int = 0
    inodes: int = 0
    apparent_bytes: int = 0


def measure(root: Path, exclude: list[Path] | None = None) -> TreeUsage:
    """Count blocks and inodes under `root`, skipping the folders in `exclude`."""
    skip = {p.resolve() for p in exclude or []}
    usage = TreeUsage()
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d) not in skip]
        names = dirnames + filenames
        usage.inodes += 1
        # Directory blocks: each entry takes 8 bytes + its name, rounded to 4.
        entry_bytes = 24 + sum(8 + align_up(len(n.encode()), 4) for n in names)
        usage.data_blocks += max(1, math.ceil(entry_bytes * 1.15 / BLOCK))
        for name in filenames:
            info = os.lstat(here / name)
            key = (info.st_dev, info.st_ino)
            if key in seen:
                continue
            seen.add(key)
            usage.inodes += 1
            if stat.S_ISREG(info.st_mode):
                usage.apparent_bytes += info.st_size
                blocks = math.ceil(info.st_size / BLOCK)
                # Files beyond 4 extents (128 MiB each) need an extent block.
                usage.data_blocks += blocks + (1 if blocks > 4 * 32768 else 0)
            elif stat.S_ISLNK(info.st_mode) and info.st_size >= 60:
                usage.data_blocks += 1
    return usage


# mke2fs's default journal size: (file systems below this many 4 KiB blocks, journal blocks).
EXT4_JOURNALS = (
    (2048, 0),
    (32768, 1024),
    (256 * 1024, 4096),
    (512 * 1024, 8192),
    (4096 * 1024, 16384),
    (8192 * 1024, 32768),
    (16384 * 1024, 65536),
    (32768 * 1024, 131072),
)


def ext4_journal_blocks(blocks: int) -> int:
    """mke2fs's default journal size for a file system of `blocks` 4 KiB blocks."""
    return next((journal for below, journal in EXT4_JOURNALS if blocks < below), 262144)


def _backup_groups(groups: int) -> int:
    found = {0, 1} if groups > 1 else {0}
    for base in (3, 5, 7):
        power = base
        while power < groups:
            found.add(power)
            power *= base
    return len(found)


def ext4_overhead_blocks(blocks: int, inodes: int) -> int:
    """Blocks mke2fs uses for itself in a file system of `blocks` blocks."""
    groups = math.ceil(blocks / BLOCKS_PER_GROUP)
    inodes_per_block = BLOCK // INODE_SIZE
    per_group = align_up(math.ceil(inodes / groups), inodes_per_block)
    inode_tables = groups * per_group // inodes_per_block
    bitmaps = 2 * groups
    desc_blocks = math.ceil(groups * 64 / BLOCK)
    # Reserved descriptor blocks let the file system grow 1024-fold (growroot).
    max_groups = math.ceil(min(2**32 - 1, blocks * 1024) / BLOCKS_PER_GROUP)
    reserved = min(1024, max(0, math.ceil(max_groups / (BLOCK // 64)) - desc_blocks))
    backups = _backup_groups(groups) * (1 + desc_blocks + reserved)
    root_and_lost_found = 6
    return inode_tables + bitmaps + backups + ext4_journal_blocks(blocks) + root_and_lost_found


def ext4_inodes(usage: TreeUsage) -> int:
    """Inodes for the contents plus room for what the system creates later."""
    return max(16384, align_up(int(usage.inodes * 1.2) + 4096, 16))


def ext4_size(usage: TreeUsage, free_bytes: int, alignment: int) -> int:
    """The smallest aligned size (bytes) that holds the contents and `free_bytes` free."""
    inodes = ext4_inodes(usage)
    wanted = usage.data_blocks + math.ceil(free_bytes / BLOCK)
    blocks = wanted
    for _ in range(50):
        total = wanted + ext4_overhead_blocks(blocks, inodes)
        if total <= blocks:
            break
        blocks = total
    return align_up(blocks * BLOCK, alignment)


def ext4_minimum(usage: TreeUsage) -> int:
    """Bytes the contents need with no free space at all."""
    return ext4_size(usage, 0, BLOCK)


def make_ext4(
    image: Path,
    offset: int,
    size: int,
    source: Path,
    *,
    label: str | None,
    uuid: str,
    usage: TreeUsage,
    workdir: Path,
    epoch: int,
    events: Events,
) -> None:
    """An ext4 file system at `offset` of `image`, filled from `source`.

    Reproducible: the UUID and hash seed are the caller's (derived), mke2fs's own times
    (creation, write, check) are `epoch` (E2FSPROGS_FAKE_TIME), mke2fs adds a folder's
    entries in sorted order (scandir), and every inode's times are settled after
    (settle_ext4_times): mke2fs copies the build host's access and change times.
    """
    conf = workdir / "mke2fs.conf"
    conf.write_text(MKE2FS_CONF)
    argv = [
        "mkfs.ext4",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        str(BLOCK),
        "-I",
        str(INODE_SIZE),
        "-N",
        str(ext4_inodes(usage)),
        "-U",
        uuid,
        "-E",
        f"offset={offset},hash_seed={uuid},lazy_itable_init=1",
        "-d",
        str(source),
    ]
    if label:
        argv += ["-L", label]
    argv += [str(image), str(size // BLOCK)]
    env = {"MKE2FS_CONFIG": str(conf), "E2FSPROGS_FAKE_TIME": str(epoch)}
    try:
        runner.run(argv, env=env, events=events)
    except OsbakeError as exc:
        if "Could not allocate" in exc.message or "No space left" in exc.message:
            raise FilesystemError(
                f"the ext4 file system ({format_size(size)}) is too small for "
                f"{source} ({format_size(usage.data_blocks * BLOCK)} of files)",
                hint="give the partition more space (its size, or disk.free)",
            ) from None
        raise
    settle_ext4_times(image, offset, source, epoch, workdir, events)


def _debugfs_quoted(path: str) -> str:
    """A path as one argument of a debugfs command (a quote is doubled inside quotes)."""
    return '"' + path.replace('"', '""') + '"'


def ext4_time_commands(source: Path, epoch: int) -> list[str]:
    """debugfs commands giving every inode made from `source` fixed times.

    Modification times are the tree's, clamped to the build's epoch (as the tarballs'
    are); access and change times are the same value (the host's say when the build
    ran). Creation times are mke2fs's, already the epoch. A name with a line break
    cannot be written in a debugfs command: it keeps the times mke2fs gave it.
    """
    commands: list[str] = []

    def settle(image_path: str, info: os.stat_result) -> None:
        when = min(int(info.st_mtime), epoch)
        quoted = _debugfs_quoted(image_path)
        commands.extend(f"sif {quoted} {field} @{when}" for field in ("mtime", "atime", "ctime"))

    settle("/", os.lstat(source))
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        relative = "/" + str(here.relative_to(source)) if here != source else ""
        for name in sorted(dirnames + filenames):
            if "\n" in name or "\n" in relative:
                continue
            settle(f"{relative}/{name}", os.lstat(here / name))
    return commands


def settle_ext4_times(
    image: Path, offset: int, source: Path, epoch: int, workdir: Path, events: Events
) -> None:
    """Give the inodes of the ext4 file system at `offset` the times of ext4_time_commands."""
    script = workdir / "ext4-times.debugfs"
    script.write_text("\n".join(ext4_time_commands(source, epoch)) + "\n")
    try:
        # stdout echoes every command: kept out of the log. stderr has the errors.
        result = runner.run(
            ["debugfs", "-w", "-f", str(script), f"{image}?offset={offset}"],
            env={"E2FSPROGS_FAKE_TIME": str(epoch)},
            capture=True,
            events=events,
        )
    finally:
        script.unlink(missing_ok=True)
    problems = [line for line in result.tail if line.strip() and not line.startswith("debugfs ")]
    if problems:
        raise FilesystemError(
            f"could not set the file times of the ext4 file system made from {source}: "
            + "; ".join(problems[-3:]),
            hint="this is a bug in osbake; run with -v for debugfs's output",
        )


def ext4_free_bytes(image: Path, offset: int, events: Events) -> int:
    """Free space of an ext4 file system inside an image file (read with dumpe2fs)."""
    text = runner.output(["dumpe2fs", "-h", f"{image}?offset={offset}"], events=events)
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        values[key.strip()] = value.strip()
    return int(values["Free blocks"]) * int(values["Block size"])


def vfat_volume_id(uuid: str) -> str:
    """The 8-hex-digit FAT volume id derived from a UUID (fstab writes it XXXX-XXXX)."""
    return uuid.replace("-", "")[:8].upper()


def vfat_fstab_id(uuid: str) -> str:
    volume = vfat_volume_id(uuid)
    return f"{volume[:4]}-{volume[4:]}"


def make_vfat(
    image: Path,
    offset: int,
    size: int,
    source: Path,
    *,
    label: str | None,
    uuid: str,
    sector_size: int,
    epoch: int,
    events: Events,
) -> None:
    """A FAT file system at `offset`, filled from `source` with mtools (no mounting).

    Reproducible: the volume id is derived, mkfs.vfat --invariant fixes its other
    time-based fields, and mtools dates every entry at the build's epoch
    (SOURCE_DATE_EPOCH), adding folders and files in sorted order.
    """
    sectors = size // sector_size
    argv = [
        "mkfs.vfat",
        "--invariant",
        "--offset",
        str(offset // sector_size),
        "-S",
        str(sector_size),
        "-i",
        vfat_volume_id(uuid),
    ]
    # Say which FAT: mkfs.vfat would otherwise judge by the whole image file.
    argv += ["-F", "12" if size < 16 * MiB else "16" if size < 512 * MiB else "32"]
    if label:
        argv += ["-n", label[:11].upper()]
    # mkfs.vfat takes the size in 1 KiB blocks after the device name.
    argv += [str(image), str(sectors * sector_size // 1024)]
    runner.run(argv, events=events)
    folders, files = _vfat_contents(source)
    if not folders and not files:
        return
    target = f"{image}@@{offset}"
    env = {
        "MTOOLS_SKIP_CHECK": "1",
        "MTOOLS_NO_VFAT": "0",
        "MTOOLSRC": "/dev/null",
        "SOURCE_DATE_EPOCH": str(epoch),
    }
    try:
        if folders:
            runner.run(["mmd", "-i", target, *[f"::/{f}" for f in folders]], env=env, events=events)
        for folder, names in files.items():
            where = f"::/{folder}/" if folder else "::/"
            runner.run(
                ["mcopy", "-s", "-p", "-Q", "-i", target, *[str(n) for n in names], where],
                env=env,
                events=events,
            )
    except OsbakeError as exc:
        if "Disk full" in exc.message or "No space" in exc.message:
            needed = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
            raise FilesystemError(
                f"the FAT file system ({format_size(size)}) is too small for the "
                f"{format_size(needed)} of files in {source}",
                hint="make the partition larger",
            ) from None
        raise


def _vfat_contents(source: Path) -> tuple[list[str], dict[str, list[Path]]]:
    """The folders (parents first) and each folder's files under `source`, sorted.

    mcopy -s would add a folder's entries in the order the host's file system lists
    them; osbake makes the folders and copies the files itself, in name order. A
    symbolic link to a folder is copied as mcopy -s copies it.
    """
    folders: list[str] = []
    files: dict[str, list[Path]] = {}
    if not source.is_dir():
        return folders, files
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        here = Path(dirpath)
        relative = "" if here == source else str(here.relative_to(source))
        if relative:
            folders.append(relative)
        linked = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if d not in linked]
        names = sorted(filenames + linked)
        if names:
            files[relative] = [here / name for name in names]
    return folders, files


def make_in_file(
    kind: str,
    path: Path,
    size: int,
    source: Path | None,
    *,
    label: str | None,
    uuid: str,
    events: Events,
) -> None:
    """btrfs and swap have no offset option: they are made in a file and copied in."""
    with path.open("wb") as handle:
        handle.truncate(size)
    if kind == "btrfs":
        argv = ["mkfs.btrfs", "-q", "-f", "-U", uuid]
        if label:
            argv += ["-L", label]
        if source is not None:
            argv += ["--rootdir", str(source)]
        runner.run([*argv, str(path)], events=events)
    elif kind == "swap":
        argv = ["mkswap", "-U", uuid]
        if label:
            argv += ["-L", label]
        runner.run([*argv, str(path)], events=events)
    else:
        raise FilesystemError(f"osbake cannot make {kind} file systems")


def btrfs_minimum(source: Path, workdir: Path, events: Events) -> int:
    """The smallest btrfs holding `source`: made with --shrink, then measured."""
    probe = workdir / "btrfs-probe.img"
    with probe.open("wb") as handle:
        handle.truncate(64 * 1024**3)
    try:
        runner.run(
            ["mkfs.btrfs", "-q", "-f", "--rootdir", str(source), "--shrink", str(probe)],
            events=events,
        )
        return probe.stat().st_size
    finally:
        probe.unlink(missing_ok=True)


def copy_into(image: Path, offset: int, source: Path) -> None:
    """Copy the data of `source` into `image` at `offset`, leaving holes as holes."""
    with source.open("rb") as src, image.open("r+b") as dst:
        size = os.fstat(src.fileno()).st_size
        for data, hole in data_extents(src.fileno(), size):
            remaining = hole - data
            src_off, dst_off = data, offset + data
            while remaining > 0:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining, src_off, dst_off)
                if copied == 0:
                    break
                remaining -= copied
                src_off += copied
                dst_off += copied


# The key derivation of osbake's LUKS containers: argon2id with 128 MiB and 4 passes, so a
# small VM (and an emulated one) unlocks in seconds; cryptsetup's default would take 1 GiB
# and be timed on the build host. `cryptsetup luksConvertKey` makes it stronger later.
LUKS_PBKDF = ("--pbkdf", "argon2id", "--pbkdf-memory", "131072", "--pbkdf-parallel", "1",
              "--pbkdf-force-iterations", "4")  # fmt: skip


def luks_encrypt(path: Path, uuid: str, key: bytes, reduce: int, events: Events) -> None:
    """Encrypt the file system in `path` in place with LUKS2 (offline: no device-mapper)."""
    runner.run(
        ["cryptsetup", "reencrypt", "--encrypt", "--type", "luks2", "--batch-mode",
         "--force-offline-reencrypt", "--reduce-device-size", f"{reduce // MiB}M",
         "--uuid", uuid, "--key-file", "-", *LUKS_PBKDF, str(path)],
        input=key,
        events=events,
    )  # fmt: skip
