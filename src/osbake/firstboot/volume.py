"""Seed volumes: iso9660 with xorriso, vfat with mkfs.vfat and mtools; no root, no mounts.

Also reads them back (label and files), which `osbake deploy` uses to check a
seed before writing it to a disk, and the tests use to check what cloud-init
will find.
"""

from __future__ import annotations

import os
import stat
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from osbake import run as runner
from osbake.errors import ArtifactError, UsageError
from osbake.events import Events
from osbake.firstboot.seed import (
    SeedContent,
    SeedFormat,
    Source,
    seed_content,
    source_date_epoch,
)

MIB = 1 << 20
FAT_CLUSTER = 4096
ISO_PVD = 0x8000


def make_seed(
    output: Path,
    *,
    format: SeedFormat | str = SeedFormat.NOCLOUD_ISO,
    user_data: Source | None = None,
    meta_data: Source | None = None,
    network_config: Source | None = None,
    vendor_data: Source | None = None,
    hostname: str | None = None,
    ssh_keys: Sequence[Source] = (),
    user: str | None = None,
    instance_id: str | None = None,
    events: Events | None = None,
) -> Path:
    """Write a seed volume to `output` (written under a temporary name, then renamed).

    Arguments are those of `seed_content()`. Returns `output`.
    """
    content = seed_content(
        format=format,
        user_data=user_data,
        meta_data=meta_data,
        network_config=network_config,
        vendor_data=vendor_data,
        hostname=hostname,
        ssh_keys=ssh_keys,
        user=user,
        instance_id=instance_id,
    )
    return write_volume(content, output, events=events)


def write_volume(content: SeedContent, output: Path, *, events: Events | None = None) -> Path:
    """Write the seed's files into a volume at `output`; atomic (temporary name, rename)."""
    output = output.absolute()
    if output.is_dir():
        raise UsageError(f"-o {output} is a directory", hint="give the seed file's path")
    if not output.parent.is_dir():
        raise UsageError(
            f"the folder {output.parent} does not exist", hint="create it or choose another -o"
        )
    epoch = source_date_epoch()
    with tempfile.TemporaryDirectory(prefix=".osbake-seed-", dir=output.parent) as tmp:
        stage = Path(tmp) / "files"
        _stage(content.files, stage, epoch)
        partial = Path(tmp) / "volume"
        if content.format.filesystem == "vfat":
            _write_vfat(content, stage, partial, epoch, events)
        else:
            _write_iso(content, stage, partial, epoch, events)
        found = probe_volume(partial)
        if found != (content.format.filesystem, content.label):
            raise ArtifactError(f"the seed volume came out wrong: {found}")
        os.chmod(partial, 0o644)
        os.replace(partial, output)
    return output


def _stage(files: dict[str, bytes], stage: Path, epoch: int) -> None:
    for name, data in files.items():
        path = stage / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in sorted(stage.rglob("*"), reverse=True):
        os.utime(path, (epoch, epoch))
    os.utime(stage, (epoch, epoch))


def _write_iso(
    content: SeedContent, stage: Path, partial: Path, epoch: int, events: Events | None
) -> None:
    runner.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-output",
            partial,
            "-volid",
            content.label,
            "-joliet",
            "-rational-rock",
            stage,
        ],
        env={"SOURCE_DATE_EPOCH": str(epoch)},
        events=events,
    )


def _vfat_size(files: dict[str, bytes]) -> int:
    """Bytes for a FAT volume that holds the files: their clusters plus room for the FATs."""
    clusters = sum(-(-len(data) // FAT_CLUSTER) or 1 for data in files.values())
    directories = {str(Path(name).parent) for name in files} | {"."}
    clusters += len(directories) * 2
    data = clusters * FAT_CLUSTER
    return max(MIB, -(-(data + data // 8 + 512 * 1024) // MIB) * MIB)


def _write_vfat(
    content: SeedContent, stage: Path, partial: Path, epoch: int, events: Events | None
) -> None:
    size = _vfat_size(content.files)
    volume_id = f"{zlib.crc32(content.instance_id.encode()):08x}"
    env = {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null", "SOURCE_DATE_EPOCH": str(epoch)}
    runner.run(
        [
            "mkfs.vfat",
            "-C",
            "-n",
            content.label,
            "-i",
            volume_id,
            "-S",
            "512",
            "-s",
            str(FAT_CLUSTER // 512),
            "--invariant",
            partial,
            str(size // 1024),
        ],
        env=env,
        events=events,
    )
    directories = sorted({str(Path(name).parent) for name in content.files} - {"."})
    made: set[str] = set()
    for directory in directories:
        parts = Path(directory).parts
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if sub not in made:
                runner.run(["mmd", "-i", partial, f"::/{sub}"], env=env, events=events)
                made.add(sub)
    by_dir: dict[str, list[Path]] = {}
    for name in sorted(content.files):
        by_dir.setdefault(str(Path(name).parent), []).append(stage / name)
    for directory, paths in by_dir.items():
        target = "::/" if directory == "." else f"::/{directory}/"
        runner.run(["mcopy", "-m", "-i", partial, *paths, target], env=env, events=events)


# -- reading back ------------------------------------------------------------------------------


def probe_volume(path: Path, offset: int = 0) -> tuple[str, str | None] | None:
    """(filesystem, label) of an iso9660 or FAT volume at `offset` of a file, else None.

    The same fields blkid reports as TYPE and LABEL, which is what cloud-init's
    ds-identify and datasources match on.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            head = handle.read(ISO_PVD + 2048)
    except OSError:
        return None
    if len(head) >= ISO_PVD + 2048 and head[ISO_PVD + 1 : ISO_PVD + 6] == b"CD001":
        label = head[ISO_PVD + 40 : ISO_PVD + 72].decode("ascii", "replace").rstrip(" \0")
        return "iso9660", label or None
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        if head[82:87] == b"FAT32" and head[66] == 0x29:
            return "vfat", _fat_label(head[71:82])
        if head[54:59] in (b"FAT12", b"FAT16") and head[38] == 0x29:
            return "vfat", _fat_label(head[43:54])
    return None


def _fat_label(raw: bytes) -> str | None:
    label = raw.decode("ascii", "replace").rstrip(" \0")
    return None if label in ("", "NO NAME") else label


def read_volume(path: Path, offset: int = 0, size: int | None = None) -> dict[str, bytes]:
    """Every file of a seed volume (iso9660 or vfat), by path inside it."""
    found = probe_volume(path, offset)
    if found is None:
        raise ArtifactError(
            f"{path} is neither an iso9660 nor a FAT volume",
            hint="make a seed with 'osbake seed'",
        )
    with tempfile.TemporaryDirectory(prefix="osbake-seed-read-") as tmp:
        image = path
        if offset or size is not None:
            image = Path(tmp) / "volume"
            _copy_range(path, image, offset, size)
        out = Path(tmp) / "files"
        out.mkdir()
        if found[0] == "iso9660":
            runner.run(
                ["xorriso", "-osirrox", "on", "-indev", image, "-extract", "/", out],
                log_output=False,
            )
        else:
            runner.run(
                ["mcopy", "-s", "-n", "-m", "-i", image, "::/*", out],
                env={"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"},
                log_output=False,
            )
        files: dict[str, bytes] = {}
        for item in sorted(out.rglob("*")):
            os.chmod(item, stat.S_IRWXU)
            if item.is_file():
                files[str(item.relative_to(out))] = item.read_bytes()
        os.chmod(out, stat.S_IRWXU)
        return files


def _copy_range(source: Path, dest: Path, offset: int, size: int | None) -> None:
    with source.open("rb") as src, dest.open("wb") as out:
        src.seek(offset)
        remaining = size if size is not None else -1
        while remaining != 0:
            chunk = src.read(MIB if remaining < 0 else min(MIB, remaining))
            if not chunk:
                break
            out.write(chunk)
            if remaining > 0:
                remaining -= len(chunk)
