"""The media QEMU attaches: a disk image or ISO to boot, a seed, and their overlays.

An image is attached behind a throw-away copy-on-write overlay (the image file is
never written); a tar archive holding one disk image is extracted first; a seed
(NoCloud/ConfigDrive) goes on a read-only virtio disk or a CD-ROM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from osbake import run
from osbake.deploy.images import is_fixed_vhd
from osbake.errors import ArtifactError, UsageError
from osbake.events import Events


class MediaKind(StrEnum):
    DISK = "disk"
    CDROM = "cdrom"


class SeedBus(StrEnum):
    """How a seed file is attached: a read-only virtio disk, or a CD-ROM drive."""

    DISK = "disk"
    CDROM = "cdrom"


class CdromBus(StrEnum):
    """Where a bootable ISO is attached: SATA (AHCI), or virtio-scsi (Debian's cloud
    kernel has no AHCI driver); `auto` picks virtio-scsi for a live ISO osbake made."""

    AUTO = "auto"
    SATA = "sata"
    SCSI = "scsi"


# The ISO 9660 primary volume descriptor's application id (osbake's live ISOs set it).
APPLICATION_ID_OFFSET = 0x8000 + 574
OSBAKE_APPLICATION_ID = b"OSBAKE LIVE"


DISK_FORMATS = {"raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"}
TAR_SUFFIXES = (".tar", ".tar.xz", ".tar.gz", ".tgz", ".tar.zst", ".tar.bz2")
COMPRESSED = {
    b"\xfd7zXZ\x00": "xz",
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
}


@dataclass(frozen=True)
class Media:
    """A file QEMU attaches: its path, QEMU format name, and drive kind."""

    path: Path
    format: str
    kind: MediaKind


def _head(path: Path, size: int, offset: int = 0) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def is_iso9660(path: Path) -> bool:
    return _head(path, 5, 0x8001) == b"CD001"


def made_by_osbake(path: Path) -> bool:
    """Whether an ISO is a live ISO made by osbake (its kernel may lack AHCI)."""
    return is_iso9660(path) and _head(
        path, len(OSBAKE_APPLICATION_ID), APPLICATION_ID_OFFSET
    ).startswith(OSBAKE_APPLICATION_ID)


def cdrom_on_scsi(path: Path, bus: CdromBus) -> bool:
    """Whether the bootable ISO goes on virtio-scsi (else SATA)."""
    if bus == CdromBus.AUTO:
        return made_by_osbake(path)
    return bus == CdromBus.SCSI


def _is_tar(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES) or _head(path, 5, 257) == b"ustar"


def detect_format(path: Path, events: Events | None = None) -> str:
    """The QEMU format name of a disk image, as `qemu-img info` detects it."""
    text = run.output(
        ["qemu-img", "info", "--output=json", path],
        events=events,
        hint=f"{path} is not a disk image QEMU can read",
    )
    try:
        fmt = json.loads(text)["format"]
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"qemu-img info gave no format for {path}") from None
    return str(fmt)


def prepare_image(image: Path, workdir: Path, events: Events | None = None) -> Media:
    """What to attach for `image`: a disk in a known format, or an ISO as a CD-ROM.

    A tar archive (`.raw.tar.xz` and the like) holding one disk image is extracted
    into `workdir` first.
    """
    if not image.is_file():
        raise UsageError(
            f"the image {image} does not exist" if not image.exists() else f"{image} is not a file",
            hint="give the path of a disk image (qcow2, raw, vmdk, vhd, vhdx), an .iso, "
            "or a .raw.tar.xz",
        )
    if _is_tar(image):
        image = _extract_tar(image, workdir, events)
    head = _head(image, 6)
    for magic, name in COMPRESSED.items():
        if head.startswith(magic):
            raise ArtifactError(
                f"{image} is compressed with {name}; QEMU cannot boot it as it is",
                hint=f"decompress it first (e.g. '{name} -dk {image}'), "
                "or pass a tar archive such as .raw.tar.xz, which osbake extracts",
            )
    fmt = detect_format(image, events)
    if fmt == "raw" and is_fixed_vhd(image):
        # Read as a VHD, the guest sees the disk without the footer (and osbake boots it
        # on the devices of the VHD's platform with --hardware target).
        fmt = "vpc"
    if image.suffix.lower() == ".iso":
        return Media(image, fmt, MediaKind.CDROM)
    if fmt not in DISK_FORMATS:
        raise ArtifactError(
            f"{image} is a '{fmt}' image, which osbake does not boot",
            hint="convert it with 'qemu-img convert -O qcow2 IMAGE out.qcow2'; osbake boots "
            + ", ".join(sorted(DISK_FORMATS))
            + " and .iso files",
        )
    return Media(image, fmt, MediaKind.DISK)


def _extract_tar(archive: Path, workdir: Path, events: Events | None) -> Path:
    target = workdir / "extracted"
    target.mkdir()
    run.run(
        ["tar", "-x", "-f", archive, "-C", target, "--no-same-owner"],
        events=events,
        hint=f"{archive} is not a readable tar archive",
    )
    files = [p for p in sorted(target.rglob("*")) if p.is_file() and not p.is_symlink()]
    if len(files) != 1:
        names = ", ".join(str(p.relative_to(target)) for p in files[:5]) or "nothing"
        raise ArtifactError(
            f"{archive} holds {len(files)} files ({names}); osbake boots an archive "
            "that holds exactly one disk image",
            hint="extract it yourself and pass the disk image",
        )
    return files[0]


def prepare_seed(seed: Path, events: Events | None = None) -> Media:
    """A NoCloud/ConfigDrive seed: an ISO 9660 image or a disk image (e.g. vfat)."""
    if not seed.is_file():
        raise UsageError(
            f"--seed: {seed} " + ("is not a file" if seed.exists() else "does not exist"),
            hint="give a seed image made by 'osbake seed' (an .iso or a vfat image)",
        )
    if is_iso9660(seed):
        return Media(seed, "raw", MediaKind.CDROM)
    return Media(seed, detect_format(seed, events), MediaKind.DISK)


def create_overlay(media: Media, path: Path, events: Events | None = None) -> Media:
    """A qcow2 file that reads through to `media` and takes every write instead."""
    backing = media.path.resolve()
    run.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", media.format, "-b", backing, path],
        events=events,
        hint=f"could not create a copy-on-write overlay for {media.path}",
    )
    return Media(path, "qcow2", MediaKind.DISK)


@dataclass(frozen=True)
class Drive:
    """A medium on the machine: read-only or not, and whether it is the one to boot."""

    media: Media
    readonly: bool = False
    boot: bool = False
    scsi: bool = False  # a CD-ROM to boot on virtio-scsi instead of SATA


def prepare_seed_drive(seed: Path, bus: SeedBus, events: Events) -> Drive:
    """The drive of a seed on `bus` (a CD-ROM only for an ISO 9660 seed)."""
    media = prepare_seed(seed, events)
    if bus == SeedBus.CDROM:
        if media.kind != MediaKind.CDROM:
            raise UsageError(
                f"--seed {seed} is not an ISO 9660 image, so it cannot be a CD-ROM",
                hint="attach it as a disk (the default), or make an ISO seed",
            )
        return Drive(media, readonly=True)
    return Drive(Media(media.path, media.format, MediaKind.DISK), readonly=True)
