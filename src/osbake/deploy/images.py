"""Disk images as streams of data runs: raw, qcow2 and raw.tar.{xz,gz} alike.

Every source yields (offset, bytes) runs in ascending order; what lies between
runs reads as zeros. Nothing is decompressed or converted to a temporary file.
"""

from __future__ import annotations

import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from osbake.deploy.qcow2 import Qcow2Reader, is_qcow2
from osbake.errors import ArtifactError
from osbake.extents import data_extents

CHUNK = 4 << 20
HEAD = 64 * 1024

XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Formats osbake writes but deploy does not read (convert them with qemu-img). A
# dynamic VHD starts with a copy of its footer; a fixed one is raw data and a footer.
FOREIGN = {
    b"KDMV": "vmdk",
    b"# Disk DescriptorFile": "vmdk",
    b"vhdxfile": "vhdx",
    b"conectix": "vhd",
}
VHD_FOOTER = 512
VHD_FIXED = 2


class ImageSource(Protocol):
    """A disk image seen as its raw content."""

    format: str
    size: int

    def chunks(self) -> Iterator[tuple[int, bytes]]: ...

    def head(self, length: int = HEAD) -> bytes: ...

    def close(self) -> None: ...


def open_image(path: Path) -> ImageSource:
    """Open a disk image, recognising its format by its content (not its name)."""
    if not path.exists():
        raise ArtifactError(f"the image {path} does not exist", hint="check the path")
    if not path.is_file():
        raise ArtifactError(f"the image {path} is not a file")
    with path.open("rb") as handle:
        magic = handle.read(512)
    if is_qcow2(magic):
        return Qcow2Source(path)
    for prefix, name in FOREIGN.items():
        if magic.startswith(prefix):
            raise ArtifactError(
                f"{path} is a {name} image; deploy reads raw, qcow2 and raw.tar.xz",
                hint=f"convert it: qemu-img convert -f {name} -O qcow2 {path} disk.qcow2",
            )
    if magic.startswith(ZSTD_MAGIC):
        raise ArtifactError(
            f"{path} is zstd-compressed, which deploy cannot stream",
            hint="decompress it first (zstd -d), or use the qcow2 or raw.tar.xz output",
        )
    if magic.startswith((XZ_MAGIC, GZIP_MAGIC, BZIP2_MAGIC)) or _is_tar(magic):
        return TarSource(path)
    if is_fixed_vhd(path):
        return RawSource(path, size=path.stat().st_size - VHD_FOOTER, format="vhd")
    return RawSource(path)


def is_fixed_vhd(path: Path) -> bool:
    """A fixed VHD: the raw disk followed by a 512-byte footer (cookie 'conectix')."""
    size = path.stat().st_size
    if size < 2 * VHD_FOOTER or size % VHD_FOOTER:
        return False
    with path.open("rb") as handle:
        handle.seek(size - VHD_FOOTER)
        footer = handle.read(VHD_FOOTER)
    return footer[:8] == b"conectix" and int.from_bytes(footer[60:64], "big") == VHD_FIXED


def _is_tar(block: bytes) -> bool:
    return len(block) >= 262 and block[257:262] == b"ustar"


def _corrupt(path: Path, exc: BaseException) -> ArtifactError:
    return ArtifactError(
        f"{path} is corrupt or truncated: {exc or type(exc).__name__}",
        hint="fetch or build the image again (its manifest's sha256 tells a good copy)",
    )


class RawSource:
    """A raw disk image; holes of a sparse file are skipped without reading them."""

    def __init__(self, path: Path, *, size: int | None = None, format: str = "raw") -> None:
        self.path = path
        self.format = format
        self.size = path.stat().st_size if size is None else size

    def head(self, length: int = HEAD) -> bytes:
        with self.path.open("rb") as handle:
            return handle.read(min(length, self.size))

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for start, end in data_extents(fd, self.size):
                offset = start
                while offset < end:
                    data = os.pread(fd, min(CHUNK, end - offset), offset)
                    if not data:
                        raise ArtifactError(f"{self.path} shrank while it was being read")
                    yield offset, data
                    offset += len(data)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


class Qcow2Source:
    format = "qcow2"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("rb")
        try:
            self._reader = Qcow2Reader(self._handle, str(path))
        except BaseException:
            self._handle.close()
            raise
        self.size = self._reader.size

    def head(self, length: int = HEAD) -> bytes:
        out = bytearray(min(length, self.size))
        for offset, data in self._reader.chunks():
            if offset >= len(out):
                break
            piece = data[: len(out) - offset]
            out[offset : offset + len(piece)] = piece
        return bytes(out)

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        return self._reader.chunks()

    def close(self) -> None:
        self._handle.close()


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    sparse: tuple[tuple[int, int], ...] | None


class TarSource:
    """A raw disk inside a (compressed) tar archive, read in one forward pass."""

    format = "raw.tar"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.member = self._find_member()
        self.size = self.member.size

    def _open(self) -> tarfile.TarFile:
        # Not stream mode ("r|*"): skipping a member there copies its buffer over and
        # over, and members cannot seek over holes. "r:*" decompresses forward too.
        try:
            return tarfile.open(self.path, mode="r:*")
        except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
            raise _corrupt(self.path, exc) from None

    def _find_member(self) -> _Member:
        """The disk: the first file named like one (disk.raw, *.raw, *.img), else the only file.

        Stops at the first match, so the archive is not decompressed twice.
        """
        files: list[_Member] = []
        with self._open() as archive:
            try:
                for info in archive:
                    if not info.isreg():
                        continue
                    holes: Any = info.sparse  # [(offset, size)] of data, or None
                    sparse = tuple((a, b) for a, b in holes) if holes else None
                    member = _Member(info.name, info.size, sparse)
                    if info.name.endswith((".raw", ".img")):
                        return member
                    files.append(member)
            except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
                raise _corrupt(self.path, exc) from None
        if len(files) == 1:
            return files[0]
        if not files:
            raise ArtifactError(f"{self.path} is an archive without a disk image in it")
        raise ArtifactError(
            f"{self.path} holds several files and none is named like a disk: "
            + ", ".join(f.name for f in files[:8]),
            hint="the archive should hold one raw disk (disk.raw)",
        )

    def _member_stream(self, archive: tarfile.TarFile) -> IO[bytes]:
        for info in archive:
            if info.name == self.member.name and info.isreg():
                stream = archive.extractfile(info)
                assert stream is not None
                return stream
        raise ArtifactError(f"{self.path} changed while it was being read")

    def head(self, length: int = HEAD) -> bytes:
        with self._open() as archive:
            try:
                data = self._member_stream(archive).read(min(length, self.size))
            except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
                raise _corrupt(self.path, exc) from None
        return data

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        with self._open() as archive:
            try:
                stream = self._member_stream(archive)
                ranges = self.member.sparse or ((0, self.size),)
                for start, length in ranges:
                    if length <= 0:
                        continue
                    stream.seek(start)
                    offset, end = start, start + length
                    while offset < end:
                        data = stream.read(min(CHUNK, end - offset))
                        if not data:
                            raise EOFError(f"the disk in it ends at byte {offset}")
                        yield offset, data
                        offset += len(data)
            except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
                raise _corrupt(self.path, exc) from None

    def close(self) -> None:
        pass
