"""The disk deploy writes to: a block device or a disk image file, and the checks before.

A deploy overwrites a whole disk, so before anything is written it refuses a
target that is mounted (or used as swap, or held by device-mapper or RAID),
the disk the running system lives on, or one too small for the image. The
first two can be forced; the last cannot.

The host is read through /proc and /sys (a `Host` with another root serves the
tests a made-up machine).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from osbake.errors import DeployError, UsageError

BLKSSZGET = 0x1268  # logical sector size
BLKRRPART = 0x125F  # re-read the partition table
BLKZEROOUT = 0x127F  # zero a range (write-zeroes or discard where the disk can)
# Mount points whose disk is "the disk the system runs from".
SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/efi", "/usr", "/var")
FORCE_HINT = "pass --force to write it anyway (this destroys what is on it)"


@dataclass(frozen=True)
class Mount:
    majmin: str
    source: str
    mountpoint: str


@dataclass
class BlockDevice:
    """A block device as sysfs describes it."""

    name: str
    majmin: str
    disk: str  # the whole disk it belongs to (itself, if it is one)
    partitions: dict[str, str] = field(default_factory=dict)  # name -> majmin
    holders: list[str] = field(default_factory=list)  # of the disk and its partitions
    slaves: list[str] = field(default_factory=list)


class Host:
    """The running system's mounts and block devices, read from <root>/proc and <root>/sys."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self.sys = root / "sys"
        self.proc = root / "proc"

    def mounts(self) -> list[Mount]:
        found: list[Mount] = []
        try:
            text = (self.proc / "self" / "mountinfo").read_text()
        except OSError:
            return found
        for line in text.splitlines():
            fields = line.split()
            if " - " not in line or len(fields) < 5:
                continue
            after = line.split(" - ", 1)[1].split()
            source = after[1] if len(after) > 1 else ""
            found.append(Mount(fields[2], _unescape(source), _unescape(fields[4])))
        return found

    def swaps(self) -> list[str]:
        try:
            lines = (self.proc / "swaps").read_text().splitlines()[1:]
        except OSError:
            return []
        return [_unescape(line.split()[0]) for line in lines if line.split()]

    def _block_dir(self, majmin: str) -> Path | None:
        link = self.sys / "dev" / "block" / majmin
        if not link.exists():
            return None
        return link.resolve()

    def device(self, majmin: str) -> BlockDevice | None:
        path = self._block_dir(majmin)
        if path is None:
            return None
        is_partition = (path / "partition").exists()
        disk_dir = path.parent if is_partition else path
        device = BlockDevice(path.name, majmin, disk_dir.name)
        for child in sorted(disk_dir.iterdir()) if disk_dir.is_dir() else []:
            if (child / "partition").exists():
                device.partitions[child.name] = _read(child / "dev")
        for owner in [disk_dir, *(disk_dir / p for p in device.partitions)]:
            device.holders += _names(owner / "holders")
        device.slaves = _names(disk_dir / "slaves")
        return device

    def majmin_of_name(self, name: str) -> str | None:
        value = _read(self.sys / "class" / "block" / name / "dev")
        return value or None

    def majmin_of_source(self, source: str) -> str | None:
        """maj:min of a mount or swap source such as /dev/sda2 (or a /dev/disk/by-* link)."""
        if not source.startswith("/dev/"):
            return None
        path = Path(source)
        if self.root == Path("/"):
            path = Path(os.path.realpath(source))
        return self.majmin_of_name(path.name)

    def disks_under(self, majmin: str, seen: set[str] | None = None) -> set[str]:
        """The whole disks (names) a device lives on, through partitions, dm and md layers."""
        seen = seen if seen is not None else set()
        if majmin in seen:
            return set()
        seen.add(majmin)
        device = self.device(majmin)
        if device is None:
            return set()
        if not device.slaves:
            return {device.disk}
        disks: set[str] = set()
        for slave in device.slaves:
            slave_majmin = self.majmin_of_name(slave)
            if slave_majmin:
                disks |= self.disks_under(slave_majmin, seen)
        return disks

    def system_disks(self) -> dict[str, str]:
        """Disk name -> the system mount point found on it (/, /boot, /usr ...)."""
        disks: dict[str, str] = {}
        for mount in self.mounts():
            if mount.mountpoint not in SYSTEM_MOUNTS:
                continue
            majmin = mount.majmin
            if majmin.startswith("0:"):  # btrfs and the like: the source names the device
                majmin = self.majmin_of_source(mount.source) or majmin
            for disk in self.disks_under(majmin):
                disks.setdefault(disk, mount.mountpoint)
        return disks

    def loop_backing(self) -> Iterator[tuple[str, str]]:
        """(loop device name, backing file) of every attached loop device."""
        block = self.sys / "block"
        if not block.is_dir():
            return
        for entry in sorted(block.iterdir()):
            backing = _read(entry / "loop" / "backing_file")
            if backing:
                yield entry.name, backing


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _names(path: Path) -> list[str]:
    try:
        return sorted(p.name for p in path.iterdir())
    except OSError:
        return []


def _unescape(text: str) -> str:
    """/proc escapes spaces and such as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


# -- the target ------------------------------------------------------------------------------


@dataclass
class Target:
    path: Path
    block_device: bool
    size: int
    majmin: str | None = None
    created: bool = False

    @property
    def kind(self) -> str:
        return "block device" if self.block_device else "disk image file"


def describe_target(path: Path, create_size: int | None = None, host: Host | None = None) -> Target:
    """What the target is and how big; a missing file is created only with a size."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if create_size is None:
            raise UsageError(
                f"the target {path} does not exist",
                hint="give a block device, an existing disk image file, or --size SIZE to "
                "create the file (e.g. --size 8G)",
            ) from None
        if not path.parent.is_dir():
            raise UsageError(f"the folder of the target {path} does not exist") from None
        return Target(path, False, create_size, created=True)
    if stat.S_ISBLK(info.st_mode):
        majmin = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
        size, sector = _block_geometry(path, majmin, host or Host())
        if sector != 512:
            raise UsageError(
                f"{path} has {sector}-byte logical sectors; osbake images are laid out for "
                "512-byte sectors and would not boot from it",
                hint="use a disk with 512-byte (or 512e) sectors",
            )
        return Target(path, True, size, majmin)
    if stat.S_ISREG(info.st_mode):
        if create_size is not None and create_size != info.st_size:
            raise UsageError(
                f"--size was given but {path} exists already ({info.st_size} bytes)",
                hint="leave out --size to write into the existing file, or remove it first",
            )
        return Target(path, False, info.st_size)
    raise UsageError(
        f"the target {path} is neither a block device nor a regular file",
        hint="give a disk (e.g. /dev/sdb) or a disk image file",
    )


def _block_geometry(path: Path, majmin: str, host: Host) -> tuple[int, int]:
    """(size in bytes, logical sector size) from sysfs, else from the device itself."""
    block = host.sys / "dev" / "block" / majmin
    sectors = _read(block / "size")
    queue = block / "queue" if (block / "queue").exists() else block / ".." / "queue"
    logical = _read(queue / "logical_block_size")
    if sectors.isdigit() and logical.isdigit():
        return int(sectors) * 512, int(logical)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _access_error(path, exc) from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        sector = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    finally:
        os.close(fd)
    return size, int(sector)


def _access_error(path: Path, exc: OSError) -> DeployError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return DeployError(
            f"no permission to write {path}",
            hint="run as root (or as a member of the 'disk' group) to write a block device",
        )
    if exc.errno == errno.EROFS:
        return DeployError(f"{path} is read-only", hint="check the disk's write-protect switch")
    if exc.errno == errno.EBUSY:
        return DeployError(
            f"{path} is in use (the kernel or another program holds it exclusively)",
            hint="stop what uses it (mounts, RAID, LVM, another deploy); " + FORCE_HINT,
        )
    return DeployError(f"cannot open {path}: {exc.strerror}")


def check_target(
    target: Target,
    *,
    image: Path,
    needed: int,
    force: bool = False,
    host: Host | None = None,
    inputs: Sequence[Path] = (),
) -> list[str]:
    """Refuse a target that must not be written; return notes for what --force let through.

    `inputs` are the other files the deploy reads (seed, manifest): the target may
    be none of them, nor the image.
    """
    host = host or Host()
    _check_not_image(target, image)
    for path in inputs:
        _check_not_input(target, path)
    problems = (
        _block_problems(target, host) if target.block_device else _file_problems(target, host)
    )
    if problems and not force:
        first, hint = problems[0]
        others = "; also: " + "; ".join(p for p, _ in problems[1:]) if problems[1:] else ""
        raise UsageError(f"refusing to write {target.path}: {first}{others}", hint=hint)
    if target.size < needed:
        raise UsageError(
            f"the target {target.path} is too small: it has {_size(target.size)} "
            f"({target.size} bytes) but needs at least {_size(needed)} ({needed} bytes)",
            hint="choose a bigger disk, or make the file bigger (truncate -s 8G FILE); "
            "this cannot be forced, the partitions would lie beyond its end",
        )
    return [f"forced: {p}" for p, _ in problems]


def _check_not_image(target: Target, image: Path) -> None:
    if target.created:
        return
    try:
        same = os.path.samefile(target.path, image)
    except OSError:
        same = False
    if same:
        raise UsageError(
            f"the target {target.path} is the image itself",
            hint="give another file or disk as the target",
        )


def _check_not_input(target: Target, path: Path) -> None:
    if target.created:
        return
    try:
        same = os.path.samefile(target.path, path)
    except OSError:
        same = False
    if same:
        raise UsageError(
            f"the target {target.path} is {path}, which this deploy reads",
            hint="give another file or disk as the target",
        )


def _block_problems(target: Target, host: Host) -> list[tuple[str, str]]:
    assert target.majmin is not None
    device = host.device(target.majmin)
    if device is None:
        return []
    whole_disk = device.name == device.disk
    # A whole disk is in use if any of its partitions is; a partition only by itself.
    ours = {device.majmin, *device.partitions.values()} if whole_disk else {device.majmin}
    problems: list[tuple[str, str]] = []
    for mount in host.mounts():
        source_majmin = host.majmin_of_source(mount.source)
        if mount.majmin in ours or (source_majmin and source_majmin in ours):
            problems.append(
                (
                    f"{mount.source} is mounted at {mount.mountpoint}",
                    f"unmount it first (umount {mount.mountpoint}); " + FORCE_HINT,
                )
            )
    for swap in host.swaps():
        if host.majmin_of_source(swap) in ours:
            problems.append((f"{swap} is in use as swap", f"swapoff {swap} first"))
    holders = (
        device.holders
        if whole_disk
        else _names(host.sys / "class" / "block" / device.name / "holders")
    )
    for holder in holders:
        problems.append(
            (
                f"it is held by {holder} (device-mapper, LVM or RAID)",
                "stop that device first (dmsetup remove, vgchange -an, mdadm --stop)",
            )
        )
    system = host.system_disks()
    if whole_disk and device.disk in system:
        problems.insert(
            0,
            (
                f"it is the disk this system runs from ({system[device.disk]} is on it)",
                "choose another disk; " + FORCE_HINT,
            ),
        )
    return _unique(problems)


def _file_problems(target: Target, host: Host) -> list[tuple[str, str]]:
    if target.created:
        return []
    real = os.path.realpath(target.path)
    problems: list[tuple[str, str]] = []
    for loop, backing in host.loop_backing():
        if backing.removesuffix(" (deleted)") != real:
            continue
        majmin = host.majmin_of_name(loop)
        if majmin is None:
            continue
        target_view = Target(Path(f"/dev/{loop}"), True, 0, majmin)
        for problem, hint in _block_problems(target_view, host):
            problems.append((f"it is attached as /dev/{loop} and {problem}", hint))
    return problems


def _unique(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(items))


def _size(value: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value} bytes"


def open_target(target: Target, path: Path | None = None, *, force: bool = False) -> int:
    """Open the target (or `path`, where a new target file is written) for writing; a
    block device exclusively, so the kernel vouches that nothing has it mounted (unless
    forced)."""
    path = path or target.path
    flags = os.O_RDWR | os.O_CLOEXEC
    if target.block_device and not force:
        flags |= os.O_EXCL
    if target.created:
        flags |= os.O_CREAT  # not O_TRUNC: another deploy may be writing it (see below)
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise _access_error(target.path, exc) from None


def lock_target(target: Target, path: Path | None = None) -> int:
    """Hold a target file (or the file a new target is written to) for this deploy.

    Two deploys into one file would interleave their writes: the second one stops
    at once and says so. The lock is on a descriptor of its own, kept until the
    deploy ends, so the tools that change the table and the file system in between
    do not drop it. (A block device is opened O_EXCL instead.)
    """
    path = path or target.path
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if target.created else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise _access_error(target.path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DeployError(
            f"another osbake deploy is writing {target.path}",
            hint="wait for it to finish, or write to another target",
        ) from None
    return fd


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make a range of a block device read as zeros (the disk does it where it can)."""
    head = (-offset) % 512
    if head:
        os.pwrite(fd, bytes(min(head, length)), offset)
        offset, length = offset + head, length - min(head, length)
    middle = length - length % 512
    if middle:
        try:
            fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, middle))
        except OSError:
            _write_zeros(fd, offset, middle)
    if length % 512:
        os.pwrite(fd, bytes(length % 512), offset + middle)


def _write_zeros(fd: int, offset: int, length: int) -> None:
    zeros = bytes(4 << 20)
    while length:
        step = min(len(zeros), length)
        os.pwrite(fd, zeros[:step], offset)
        offset += step
        length -= step


def reread_partitions(fd: int) -> bool:
    """Ask the kernel to read the new table; False where it cannot (e.g. a loop device
    attached without partition scanning)."""
    try:
        fcntl.ioctl(fd, BLKRRPART)
    except OSError:
        return False
    return True
