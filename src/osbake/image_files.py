"""Files read out of a disk image, without root and without mounting it.

The image is recognised by its content, not its name (osbake.deploy.images: raw,
qcow2, fixed VHD, raw.tar.*; vmdk, vhdx and dynamic VHD are converted by qemu-img
to a sparse raw file first). The partition that holds the path is found in the
partition table (the Discoverable Partitions types of / and /usr, then any other
Linux partition; a disk without a table is one file system). Its data is copied
into a sparse temporary file, or, for ext4 in a raw image, read in place, and the
file is read with debugfs (ext4) or `btrfs restore` (btrfs).

The image is untrusted: what is copied out of it, the file read and each tool's
memory and time are bounded; the tools never write outside a temporary folder
that is removed on every path; a path inside the image is looked up by the file
system's own tools, so a symlink in it cannot reach the host.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from osbake import run as runner
from osbake.arch import ARCHITECTURES
from osbake.deploy.images import FOREIGN, ImageSource, RawSource, is_fixed_vhd, open_image
from osbake.deploy.layout import LINUX_DATA, SECTOR, read_layout
from osbake.deploy.partitions import probe_filesystem
from osbake.deploy.qcow2 import is_qcow2
from osbake.disk import lvm
from osbake.disk.layout import GPT_TYPES, MBR_TYPES
from osbake.disk.sizes import format_size
from osbake.errors import ArtifactError, CommandError
from osbake.recipe.model import PartitionType

GiB = 1 << 30
MiB = 1 << 20
ROOT_TYPES = frozenset(info.gpt_root for info in ARCHITECTURES.values())
USR_TYPES = frozenset(info.gpt_usr for info in ARCHITECTURES.values() if info.gpt_usr)
MBR_LINUX = "83"
LVM_TYPES = frozenset(
    t.lower() for t in (GPT_TYPES[PartitionType.LVM], MBR_TYPES[PartitionType.LVM])
)
PV_HEAD = 8 * MiB  # what is read of an LVM partition to find its logical volumes
MAX_CANDIDATES = 4  # partitions looked into for one path
QEMU_FORMATS = {"vmdk": "vmdk", "vhdx": "vhdx", "vhd": "vpc"}  # FOREIGN's names -> qemu-img's
SAFE_PATH = re.compile(r"(/[A-Za-z0-9._+-]+)+")
EXT4_NOT_FOUND = "File not found by ext2_lookup"
EXT4_CHATTER = ("debugfs ", "catastrophic mode")


@dataclass(frozen=True)
class Limits:
    """What reading one file out of an untrusted image may cost."""

    data: int = 64 * GiB  # bytes copied out of the image into temporary files
    file: int = 256 * MiB  # the file read
    disk: int = 16 << 40  # an image's virtual size
    seconds: float = 900.0  # all of it, wall clock
    memory: int = 2 * GiB  # address space of each tool


@dataclass(frozen=True)
class Found:
    data: bytes
    partition: int | None  # its number, None for a disk without a partition table
    filesystem: str
    volume: str | None = None  # "group/volume" when the file system is on an LVM volume


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.copied = 0
        self.deadline = time.monotonic() + limits.seconds

    def left(self) -> int:
        return max(1, int(self.deadline - time.monotonic()))

    def spend(self, length: int, image: Path) -> None:
        self.copied += length
        if self.copied > self.limits.data:
            raise ArtifactError(
                f"{image} holds more than {format_size(self.limits.data)} of data where "
                "osbake looked for the file",
                hint="is it a disk image? a crafted image can point many blocks at the same data",
            )
        if time.monotonic() > self.deadline:
            raise ArtifactError(
                f"reading {image} took longer than {self.limits.seconds:.0f} s",
                hint="a real image is read in minutes; a crafted one can make the tools work "
                "without end",
            )


def read_file(image: Path, path: str, limits: Limits | None = None) -> Found:
    """The content of the file at absolute `path` inside the disk image `image`."""
    limits = limits or Limits()
    if not SAFE_PATH.fullmatch(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
        raise ValueError(f"not a plain absolute path: {path!r}")
    budget = _Budget(limits)
    with tempfile.TemporaryDirectory(prefix="osbake-inspect-") as tmp:
        work = Path(tmp)
        source = _open(image, work, budget)
        try:
            if source.size > limits.disk:
                raise ArtifactError(
                    f"{image} claims a disk of {source.size} bytes, which osbake does not read",
                    hint="the file is damaged or crafted",
                )
            return _find(image, source, path, work, budget)
        finally:
            source.close()


def is_disk_image(image: Path) -> bool:
    """Whether the file looks like a disk image (not a root tarball or an OCI archive)."""
    with image.open("rb") as handle:
        head = handle.read(64 * 1024)
    if is_qcow2(head) or any(head.startswith(magic) for magic in FOREIGN):
        return True
    layout = read_layout(head)
    if layout.table is not None and layout.partitions:
        return True
    if probe_filesystem(image, 0) in ("ext4", "btrfs") or is_fixed_vhd(image):
        return True
    return _tar_holds_disk(image)


def _tar_holds_disk(image: Path) -> bool:
    """A (compressed) tarball whose first member is a raw disk, as the raw.tar.* outputs."""
    try:
        with tarfile.open(image, mode="r:*") as archive:
            first = archive.next()
    except (tarfile.TarError, lzma.LZMAError, zlib.error, OSError, EOFError, ValueError):
        return False
    return first is not None and first.isreg() and first.name.endswith((".raw", ".img"))


def _open(image: Path, work: Path, budget: _Budget) -> ImageSource:
    with image.open("rb") as handle:
        magic = handle.read(512)
    for prefix, name in FOREIGN.items():
        if magic.startswith(prefix):
            if prefix == b"# Disk DescriptorFile":
                raise ArtifactError(
                    f"{image} is a vmdk descriptor: its data is in other files, which osbake "
                    "does not open for an image it does not trust",
                    hint=f"convert it to one file: qemu-img convert -O qcow2 {image} disk.qcow2",
                )
            return RawSource(_convert(image, QEMU_FORMATS[name], work, budget))
    return open_image(image)


def _bounded(argv: list[str], budget: _Budget, file_size: int | None = None) -> list[str]:
    """The command under a wall-clock limit and limits of memory (and of file size)."""
    tool = runner.require_tool(argv[0])
    limits = [f"--as={budget.limits.memory}"]
    if file_size is not None:
        limits.append(f"--fsize={file_size}")
    return [
        "timeout",
        "--kill-after=5",
        str(budget.left()),
        "prlimit",
        *limits,
        "--",
        tool,
        *argv[1:],
    ]


def _convert(image: Path, fmt: str, work: Path, budget: _Budget) -> Path:
    """A single-file vmdk, vhdx or VHD as a sparse raw file (qemu-img, bounded)."""
    link = work / f"image.{fmt}"
    link.symlink_to(image.resolve())
    try:
        info = json.loads(
            runner.output(
                _bounded(["qemu-img", "info", "--output=json", "-f", fmt, str(link)], budget)
            )
        )
    except (CommandError, ValueError):
        raise ArtifactError(
            f"qemu-img cannot read {image} as {fmt}", hint="the file is damaged or not a disk image"
        ) from None
    if not isinstance(info, dict):
        raise ArtifactError(f"qemu-img cannot read {image} as {fmt}")
    extents = info.get("format-specific", {}).get("data", {}).get("extents", [])
    others = [e.get("filename") for e in extents if e.get("filename") != str(link)]
    if info.get("backing-filename") or others:
        raise ArtifactError(
            f"{image} refers to other files ({info.get('backing-filename') or others[0]}), "
            "which osbake does not open for an image it does not trust",
            hint=f"convert it to one file: qemu-img convert -O qcow2 {image} disk.qcow2",
        )
    size = info.get("virtual-size")
    if not isinstance(size, int) or not 0 < size <= budget.limits.disk:
        raise ArtifactError(f"{image} claims a disk of {size} bytes, which osbake does not read")
    raw = work / "image.raw"
    try:
        runner.run(
            _bounded(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(link), str(raw)], budget),
            capture=True,
        )
    except CommandError as exc:
        raise ArtifactError(
            f"qemu-img could not convert {image} to raw: {(exc.tail or ['?'])[-1]}",
            hint="the image is damaged, or the temporary folder is full (TMPDIR)",
        ) from None
    budget.spend(_allocated(raw), image)
    return raw


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@dataclass(frozen=True)
class _Candidate:
    number: int | None
    start: int  # bytes
    length: int
    inner: str  # the path inside this file system
    volume: str | None = None  # "group/volume" of a logical volume


def _candidates(image: Path, source: ImageSource, path: str, budget: _Budget) -> list[_Candidate]:
    layout = read_layout(source.head())
    if layout.table is None:
        return [_Candidate(None, 0, source.size, path)]
    found: list[tuple[int, _Candidate]] = []
    for part in layout.partitions:
        start, length = part.start * SECTOR, part.sectors * SECTOR
        if part.start < 1 or part.end < part.start or start + length > source.size:
            continue
        if part.type in USR_TYPES:
            if path.startswith("/usr/"):
                found.append((0, _Candidate(part.number, start, length, path[4:])))
        elif part.type in ROOT_TYPES:
            found.append((1, _Candidate(part.number, start, length, path)))
        elif part.type in (LINUX_DATA, MBR_LINUX):
            found.append((2, _Candidate(part.number, start, length, path)))
        elif part.type.lower() in LVM_TYPES:
            for volume in _logical_volumes(image, source, start, length, budget):
                rank = 1 if volume.name == "root" else 2
                name = f"{volume.group}/{volume.name}"
                at = start + volume.offset
                found.append((rank, _Candidate(part.number, at, volume.length, path, name)))
    found.sort(key=lambda item: item[0])
    return [c for _, c in found[:MAX_CANDIDATES]]


def _logical_volumes(
    image: Path, source: ImageSource, start: int, length: int, budget: _Budget
) -> list[lvm.LogicalVolume]:
    """The linear logical volumes of the LVM physical volume at `start`, read from its
    own metadata (no lvm tools, which need root and device-mapper to read an image)."""
    area = _read_range(image, source, start, min(length, PV_HEAD), budget)
    location = lvm.pv_metadata_location(area)
    text = lvm.metadata_from_area(area, *location) if location else None
    if text is None:
        return []
    try:
        volumes = lvm.logical_volumes(text)
    except ValueError:
        return []
    return [v for v in volumes if v.length > 0 and v.offset + v.length <= length]


def _read_range(
    image: Path, source: ImageSource, start: int, length: int, budget: _Budget
) -> bytes:
    """Bytes start..start+length of the disk, in memory (a few MiB at most)."""
    out = bytearray(length)
    end = start + length
    for offset, data in source.chunks():
        if offset >= end:
            break
        budget.spend(0, image)
        if offset + len(data) <= start:
            continue
        piece = memoryview(data)[max(0, start - offset) : end - offset]
        at = max(offset, start) - start
        out[at : at + piece.nbytes] = piece
    return bytes(out)


def _find(image: Path, source: ImageSource, path: str, work: Path, budget: _Budget) -> Found:
    candidates = _candidates(image, source, path, budget)
    if not candidates:
        raise ArtifactError(
            f"{image} has no Linux partition (ext4 or btrfs) in its partition table",
            hint="is it an osbake disk image? osbake inspect reads root and /usr partitions",
        )
    seen: list[str] = []
    for index, candidate in enumerate(candidates):
        where = work / f"part{index}"
        with _partition(image, source, candidate, where, budget) as (device, fs):
            name = f"partition {candidate.number}" if candidate.number else "the disk"
            if candidate.volume:
                name += f" (LVM {candidate.volume})"
            if fs == "ext4":
                data = _read_ext4(image, device, candidate.inner, where, budget)
            elif fs == "btrfs":
                data = _read_btrfs(image, device, candidate.inner, where, budget)
            else:
                seen.append(f"{name} ({fs or 'no known file system'})")
                continue
            if data is not None:
                return Found(data, candidate.number, fs, candidate.volume)
            seen.append(f"{name} ({fs})")
    raise ArtifactError(
        f"{image} has no {path}: looked in " + ", ".join(seen),
        hint="was it built by osbake? osbake reads ext4 and btrfs root file systems",
    )


@contextmanager
def _partition(
    image: Path, source: ImageSource, candidate: _Candidate, where: Path, budget: _Budget
) -> Iterator[tuple[str, str | None]]:
    """(what the tools open, file system) of one partition; its temporary files go after."""
    where.mkdir()
    try:
        if isinstance(source, RawSource):
            fs = probe_filesystem(source.path, candidate.start)
            if fs == "ext4":
                # e2fsprogs opens `file?offset=N`: nothing copied. A link keeps '?' out of the name.
                link = where / "disk"
                link.symlink_to(source.path.resolve())
                yield f"{link}?offset={candidate.start}", fs
                return
            if fs != "btrfs":
                yield "", fs
                return
        copy = where / "partition.img"
        _copy_range(image, source, candidate.start, candidate.length, copy, budget)
        yield str(copy), probe_filesystem(copy, 0)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _copy_range(
    image: Path, source: ImageSource, start: int, length: int, dest: Path, budget: _Budget
) -> None:
    """Bytes start..start+length of the disk into a sparse file; zeros are not written."""
    end = start + length
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, length)
        for offset, data in source.chunks():
            if offset >= end:
                break
            if offset + len(data) <= start:
                budget.spend(0, image)
                continue
            piece = memoryview(data)[max(0, start - offset) : end - offset]
            if piece.nbytes and bytes(piece).count(0) != piece.nbytes:
                budget.spend(piece.nbytes, image)
                os.pwrite(fd, piece, max(offset, start) - start)
            else:
                budget.spend(0, image)
    except OSError as exc:
        raise ArtifactError(
            f"could not copy a partition of {image} to {dest.parent}: {exc.strerror}",
            hint="set TMPDIR to a folder with room for the image's root file system",
        ) from None
    finally:
        os.close(fd)


def _read_ext4(image: Path, device: str, inner: str, where: Path, budget: _Budget) -> bytes | None:
    # `cat` reads a symlink's own inode as if it were a file: ask what the path is first.
    stat_out = where / "stat"
    found = _debugfs(image, ["stat", inner], device, stat_out, budget, limit=MiB)
    if found is None:
        return None
    text = stat_out.read_text(errors="replace")
    kind = re.search(r"Type: (\S+)", text)
    size = re.search(r"\bSize: (\d+)", text)
    if kind is None or size is None:
        raise ArtifactError(f"debugfs could not read {inner} in {image}: {text[:200]!r}")
    if kind.group(1) != "regular":
        return None
    _check_size(image, inner, int(size.group(1)), budget)
    out = where / "file"
    if _debugfs(image, ["cat", inner], device, out, budget, limit=budget.limits.file) is None:
        return None
    return out.read_bytes()


def _debugfs(
    image: Path, request: list[str], device: str, out: Path, budget: _Budget, *, limit: int
) -> Path | None:
    """Run one debugfs request with its output (at most `limit` bytes) into `out`; None if
    the path is not there."""
    argv = ["debugfs", "-c", "-R", " ".join(f'"{word}"' for word in request), device]
    with out.open("wb") as handle:
        result = runner.run(
            _bounded(argv, budget, limit + 1),
            stdout=handle,
            check=False,
            env={"DEBUGFS_PAGER": "__none__"},
        )
    complaints = [
        line for line in result.tail if line.strip() and not line.startswith(EXT4_CHATTER)
    ]
    if any(EXT4_NOT_FOUND in line for line in complaints):
        return None
    if result.returncode != 0 or complaints:
        if out.stat().st_size > limit:
            _check_size(image, request[-1], limit + 1, budget)
        raise _tool_failed(image, "debugfs", result, budget)
    return out


def _check_size(image: Path, inner: str, size: int, budget: _Budget) -> None:
    if size > budget.limits.file:
        raise ArtifactError(
            f"{inner} in {image} is larger than {budget.limits.file} bytes ({size})",
            hint="a manifest is far smaller: the image is not one osbake built, or was altered",
        )


def _read_btrfs(image: Path, device: str, inner: str, where: Path, budget: _Budget) -> bytes | None:
    restored = where / "restored"
    restored.mkdir()
    parts = inner.strip("/").split("/")
    pattern = ""
    for part in reversed(parts):
        pattern = f"(|/{re.escape(part)}{pattern})"
    # Only the path's folders and the file match: nothing else is written, and
    # `btrfs restore` writes no symlinks unless asked (-S).
    argv = ["btrfs", "restore", "--path-regex", f"^{pattern}$", device, str(restored)]
    result = runner.run(_bounded(argv, budget, budget.limits.file + 1), capture=True, check=False)
    if result.returncode != 0:
        # A write past the size limit fails (EFBIG: Python's children ignore SIGXFSZ).
        for written in restored.rglob("*"):
            if written.is_file() and written.stat().st_size >= budget.limits.file:
                _check_size(image, inner, budget.limits.file + 1, budget)
        raise _tool_failed(image, "btrfs restore", result, budget)
    target = restored
    for part in parts:
        target = target / part
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            return None
    if not stat.S_ISREG(os.lstat(target).st_mode):
        return None
    _check_size(image, inner, os.lstat(target).st_size, budget)
    return target.read_bytes()


def _tool_failed(
    image: Path, tool: str, result: runner.Completed, budget: _Budget
) -> ArtifactError:
    status = result.returncode
    if status in (124, 137):
        why = f"it took longer than {budget.limits.seconds:.0f} s"
    else:
        why = (result.tail or [f"status {status}"])[-1].strip()
    return ArtifactError(
        f"{tool} could not read {image}: {why}",
        hint="the file system in the image is damaged, or the image is not one osbake built",
    )
