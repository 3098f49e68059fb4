"""The fast-path installer: write a disk image to a disk, the way bare-metal provisioning does.

    report = deploy(Path("out/debian-cloud.qcow2"), Path("/dev/sdb"),
                    configdrive=Path("seed.iso"), grow=True, verify=True)

The story, each step a function of the context:

1. check     the image (format, size), its checksum source, the seed, the target
             (mounted? system disk? big enough?) - nothing is written yet
2. checksum  the image file against its manifest's sha256 (or --sha256)
3. write     stream the image's data to the target, zeros skipped, with a digest
4. verify    (--verify) read the target back: it must have the same digest
5. table     move the GPT backup header to the end of the target
6. seed      (--seed/--configdrive) a partition at the end of the disk holding the
             seed volume, as OpenStack Ironic does (64 MiB at most)
7. grow      (--grow) the root partition over the free space, then its filesystem
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osbake.deploy import layout as layout_mod
from osbake.deploy import partitions
from osbake.deploy import target as target_mod
from osbake.deploy.images import ImageSource, open_image
from osbake.deploy.layout import SECTOR, Layout, read_layout
from osbake.deploy.target import Host, Target
from osbake.deploy.writer import BlockDigest, DiskWriter, read_back_digest
from osbake.errors import ArtifactError, DeployError, OsbakeError, UsageError
from osbake.events import Events

MAX_SEED_BYTES = 64 << 20  # Ironic's limit for a config drive partition
# A target file deploy creates (--size): sparse, but a size past this is a typo.
MAX_TARGET_FILE = 1 << 46  # 64 TiB
SEED_LABELS = {
    "config-2": "configdrive",
    "CONFIG-2": "configdrive",
    "cidata": "nocloud",
    "CIDATA": "nocloud",
}

__all__ = ["DeployReport", "GrowReport", "SeedPartition", "deploy"]


@dataclass
class SeedPartition:
    number: int
    start: int  # bytes
    size: int  # bytes
    label: str
    filesystem: str


@dataclass
class GrowReport:
    partition: int
    old_size: int  # bytes
    new_size: int  # bytes
    filesystem: str | None
    filesystem_grown: bool


@dataclass
class DeployReport:
    """What a deploy did; `to_json()` for machines."""

    image: str
    target: str
    target_kind: str
    format: str
    image_size: int
    target_size: int
    written: int = 0  # bytes of data written
    skipped: int = 0  # bytes of zeros not written
    seconds: float = 0.0
    artifact_sha256: str | None = None
    checksum_source: str | None = None  # where the expected sha256 came from
    content_digest: str | None = None
    verified: bool = False
    table: str | None = None
    gpt_relocated: bool = False
    seed: SeedPartition | None = None
    grown: GrowReport | None = None
    partitions_reread: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _SeedVolume:
    path: Path
    size: int
    filesystem: str
    label: str


@dataclass
class _Context:
    image_path: Path
    target_path: Path
    seed_path: Path | None
    configdrive: bool
    grow: bool
    verify: bool
    force: bool
    sha256: str | None
    checksum: bool
    size: int | None
    raw: bool
    events: Events
    host: Host
    tmp: Path
    image: ImageSource | None = None
    layout: Layout = field(default_factory=lambda: Layout(None))
    target: Target | None = None
    expected: str | None = None
    seed: _SeedVolume | None = None
    fd: int | None = None
    lock_fd: int | None = None  # held from the first write to the end (file targets)
    report: DeployReport | None = None
    manifest_path: Path | None = None

    @property
    def disk(self) -> Path:
        """The path being written: a new target file is written under a temporary name
        and renamed when everything succeeded."""
        if self.target is not None and self.target.created:
            return self.target_path.with_name(f".{self.target_path.name}.osbake-partial")
        return self.target_path


def deploy(
    image: Path,
    target: Path,
    *,
    seed: Path | None = None,
    configdrive: Path | None = None,
    grow: bool = False,
    verify: bool = False,
    force: bool = False,
    sha256: str | None = None,
    checksum: bool = True,
    size: int | None = None,
    raw: bool = False,
    events: Events | None = None,
    host: Host | None = None,
) -> DeployReport:
    """Write `image` (raw, qcow2 or raw.tar.xz/gz) to `target` (block device or file).

    seed:        a seed volume made by `osbake seed` (NoCloud or config drive)
    configdrive: an OpenStack config drive: a config-2 volume, or Ironic's gzipped
                 and base64-encoded form of one
    grow:        grow the root (last) partition and its ext4 filesystem to fill the disk
    verify:      read the written data back and compare it with what was written
    force:       write a target that is mounted or the system's own disk
    sha256:      the expected sha256 of the image file when it has no manifest
    checksum:    False writes an image that has neither manifest nor sha256
    size:        create the target file with this size when it does not exist
    raw:         write the image byte for byte even when it does not look like a disk
                 image (no partition table and no disk image header)
    """
    if seed is not None and configdrive is not None:
        raise UsageError("give either --seed or --configdrive, not both")
    _check_size(size)
    events = events or Events()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="osbake-deploy-") as tmp:
        ctx = _Context(
            image_path=image,
            target_path=target,
            seed_path=configdrive if configdrive is not None else seed,
            configdrive=configdrive is not None,
            grow=grow,
            verify=verify,
            force=force,
            sha256=sha256.lower() if sha256 else None,
            checksum=checksum,
            size=size,
            raw=raw,
            events=events,
            host=host or Host(),
            tmp=Path(tmp),
        )
        steps: list[tuple[str, str, Callable[[_Context], None]]] = [
            ("check", "image, seed and target", check),
            ("checksum", "image file against its sha256", verify_checksum),
            ("write", "stream the image to the target", write_image),
        ]
        if verify:
            steps.append(("verify", "read the target back", verify_written))
        steps.append(("table", "GPT backup header to the end", fix_table))
        if ctx.seed_path is not None:
            steps.append(("seed", "config partition at the end", write_seed_partition))
        if grow:
            steps.append(("grow", "root partition and filesystem", grow_root))
        events.begin(image.name, [{"name": n, "describe": d} for n, d, _ in steps])
        current = ""
        try:
            for name, _, step in steps:
                current = name
                events.step(name)
                began = time.monotonic()
                step(ctx)
                events.result(name, time.monotonic() - began)
            finish(ctx)
        except OsbakeError as exc:
            events.finish(False, error=exc.message, step=current)
            raise
        except OSError as exc:
            error = _os_error(current, exc)
            events.finish(False, error=error.message, step=current)
            raise error from exc
        except BaseException:
            events.finish(False, error="interrupted", step=current)
            raise
        finally:
            if ctx.fd is not None:
                os.close(ctx.fd)
            if ctx.image is not None:
                ctx.image.close()
            if ctx.lock_fd is not None:
                assert ctx.target is not None
                if ctx.target.created and ctx.disk.exists():
                    ctx.disk.unlink()  # a new target file only appears complete
                os.close(ctx.lock_fd)
        assert ctx.report is not None
        ctx.report.seconds = round(time.monotonic() - started, 3)
        events.finish(True, artifacts=[str(target)])
        return ctx.report


def _os_error(step: str, exc: OSError) -> DeployError:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return DeployError(
            f"{step}: no space left on the filesystem that holds the target{where}",
            hint="free some space there, or write to another place (a file target stays "
            "sparse, but its data and the --grow copy need room)",
        )
    if exc.errno == errno.EIO:
        return DeployError(
            f"{step}: the disk reported an I/O error{where}",
            hint="the disk may be failing; check dmesg and try another disk",
        )
    return DeployError(f"{step}: {exc.strerror or exc}{where}")


# -- 1. check ----------------------------------------------------------------------------------


def _check_size(size: int | None) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % SECTOR:
        raise UsageError(f"--size {size!r} must be a positive multiple of 512 bytes")
    if size > MAX_TARGET_FILE:
        raise UsageError(
            f"--size {size} bytes is more than osbake creates ({MAX_TARGET_FILE >> 40} TiB)",
            hint="check the unit (8G is 8 GiB); write to a block device for a bigger disk",
        )


def check(ctx: _Context) -> None:
    ctx.image = open_image(ctx.image_path)
    head = ctx.image.head()
    ctx.layout = read_layout(head)
    if not ctx.raw:
        _check_disk_image(ctx, head)
    ctx.expected, source = _expected_sha256(ctx)
    if ctx.seed_path is not None:
        ctx.seed = _load_seed(ctx.seed_path, ctx.configdrive, ctx.tmp, ctx.events)
    if (ctx.seed is not None or ctx.grow) and ctx.layout.table is None:
        raise ArtifactError(
            f"{ctx.image_path} has no partition table, so there is nothing to "
            + ("grow" if ctx.grow else "add a seed partition to"),
            hint="deploy whole-disk images (the raw, qcow2 or raw.tar.xz outputs)",
        )
    if ctx.grow and not ctx.layout.partitions:
        raise ArtifactError(f"{ctx.image_path} has a partition table but no partitions")
    needed = layout_mod.space_needed(
        ctx.layout, ctx.image.size, ctx.seed.size if ctx.seed else None
    )
    ctx.target = target_mod.describe_target(ctx.target_path, ctx.size, ctx.host)
    inputs = [p for p in (ctx.seed_path, ctx.manifest_path) if p is not None]
    notes = target_mod.check_target(
        ctx.target,
        image=ctx.image_path,
        needed=needed,
        force=ctx.force,
        host=ctx.host,
        inputs=inputs,
    )
    ctx.report = DeployReport(
        image=str(ctx.image_path),
        target=str(ctx.target_path),
        target_kind=ctx.target.kind,
        format=ctx.image.format,
        image_size=ctx.image.size,
        target_size=ctx.target.size,
        checksum_source=source,
        table=ctx.layout.table,
        notes=notes,
    )
    if ctx.expected is None:
        ctx.report.notes.append("the image file's checksum was not verified (--no-checksum)")


def _check_disk_image(ctx: _Context, head: bytes) -> None:
    """Refuse what does not look like a whole-disk image (unless --raw)."""
    assert ctx.image is not None
    if ctx.image.format == "qcow2":
        return  # a disk image format by its header
    if layout_mod.is_partitioned_disk(head, ctx.image.size):
        return
    what = "the disk in the archive" if ctx.image.format == "raw.tar" else "it"
    raise ArtifactError(
        f"{ctx.image_path} does not look like a disk image: {what} has no partition table "
        "(GPT or MBR) and it is not a qcow2, vmdk, vhd or vhdx file; deploy writes only "
        "disk images",
        hint="check that this is the image you meant (an osbake build's .raw, .qcow2, .vhd "
        "or .raw.tar.xz); to write a disk without a partition table (a bare file system, "
        "an ISO without a hybrid MBR) byte for byte, pass --raw",
    )


def _expected_sha256(ctx: _Context) -> tuple[str | None, str | None]:
    if ctx.sha256 is not None:
        if len(ctx.sha256) != 64 or any(c not in "0123456789abcdef" for c in ctx.sha256):
            raise UsageError(f"--sha256 {ctx.sha256!r} is not a sha256 (64 hexadecimal digits)")
        return ctx.sha256, "--sha256"
    found = _manifest_entry(ctx.image_path)
    if found is not None:
        manifest, entry = found
        ctx.manifest_path = manifest
        actual = ctx.image_path.stat().st_size
        if "size" in entry and entry["size"] != actual:
            raise ArtifactError(
                f"{ctx.image_path} is {actual} bytes but its manifest says {entry['size']}: "
                "it is truncated or is not the file the manifest describes",
                hint="fetch or build the image again; the target was not touched",
            )
        return str(entry["sha256"]).lower(), f"manifest {manifest.name}"
    if not ctx.checksum:
        return None, None
    raise UsageError(
        f"nothing to check {ctx.image_path} against: no manifest beside it lists it",
        hint="keep <image>.manifest.json next to the image, pass --sha256 HEX (from its "
        "checksum file), or --no-checksum to write it unverified",
    )


def _manifest_entry(image: Path) -> tuple[Path, dict[str, Any]] | None:
    for candidate in sorted(image.parent.glob("*.manifest.json")):
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entry in data.get("artifacts", []) if isinstance(data, dict) else []:
            if isinstance(entry, dict) and entry.get("file") == image.name and "sha256" in entry:
                return candidate, entry
    return None


def _load_seed(path: Path, configdrive: bool, tmp: Path, events: Events) -> _SeedVolume:
    from osbake.firstboot.volume import probe_volume, read_volume

    flag = "--configdrive" if configdrive else "--seed"
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file", hint="make one with 'osbake seed'")
    if configdrive:
        path = _decode_ironic(path, tmp)
    size = path.stat().st_size
    if size > MAX_SEED_BYTES:
        raise UsageError(
            f"{flag} {path} is {size} bytes; a config partition holds 64 MiB at most",
            hint="keep large files out of the seed (fetch them from the network at boot)",
        )
    found = probe_volume(path)
    filesystem, label = found if found is not None else ("", None)
    if label is None or label not in SEED_LABELS:
        what = f"a {filesystem} volume labelled {label!r}" if found else "not a volume"
        raise UsageError(
            f"{flag} {path} is {what}; cloud-init looks for the label config-2 or cidata",
            hint="make the seed with 'osbake seed'",
        )
    kind = SEED_LABELS[label]
    if configdrive and kind != "configdrive":
        raise UsageError(
            f"--configdrive {path} is a NoCloud seed (label {label}), not a config drive",
            hint="pass it with --seed, or make a config drive: osbake seed --format configdrive",
        )
    files = read_volume(path)
    if kind == "configdrive":
        metas = [f for f in files if f.startswith("openstack/") and f.endswith("/meta_data.json")]
        if "openstack/latest/meta_data.json" not in files:
            raise UsageError(
                f"{flag} {path} has no openstack/latest/meta_data.json; cloud-init would not "
                "read it as a config drive",
                hint="make the seed with 'osbake seed --format configdrive'",
            )
        for name in metas:
            try:
                meta = json.loads(files[name])
            except ValueError as exc:
                raise UsageError(f"{flag} {path}: {name} is not valid JSON ({exc})") from None
            if not isinstance(meta, dict) or "uuid" not in meta:
                raise UsageError(
                    f"{flag} {path}: {name} has no 'uuid'; cloud-init refuses such a config drive"
                )
    else:
        missing = [f for f in ("user-data", "meta-data") if f not in files]
        if missing:
            raise UsageError(
                f"{flag} {path} lacks {' and '.join(missing)} at its root; "
                "cloud-init needs both for a NoCloud seed",
                hint="make the seed with 'osbake seed'",
            )
    return _SeedVolume(path, size, filesystem, label)


def _seed_too_big(path: Path) -> UsageError:
    return UsageError(
        f"--configdrive {path} holds more than 64 MiB; a config partition holds 64 MiB at most",
        hint="keep large files out of the seed (fetch them from the network at boot)",
    )


def _decode_ironic(path: Path, tmp: Path) -> Path:
    """A config drive as Ironic takes it: plain, gzipped, or gzipped then base64-encoded."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head[:2] != b"\x1f\x8b" and head[:4] != b"H4sI":  # gzip, or base64 of its magic
        return path
    # Compressed, it is smaller than the volume (base64 adds a third): anything
    # bigger, or anything that inflates past the limit, is not a config drive.
    if path.stat().st_size > MAX_SEED_BYTES * 4 // 3 + 4096:
        raise _seed_too_big(path)
    data = path.read_bytes()
    if head[:4] == b"H4sI":
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise UsageError(f"--configdrive {path}: bad base64 ({exc})") from None
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    try:
        raw = inflate.decompress(data, MAX_SEED_BYTES + 1)
    except zlib.error as exc:
        raise UsageError(f"--configdrive {path}: cannot decompress it ({exc})") from None
    if len(raw) > MAX_SEED_BYTES:
        raise _seed_too_big(path)
    if not inflate.eof:
        raise UsageError(f"--configdrive {path}: cannot decompress it (the data ends early)")
    decoded = tmp / "configdrive.img"
    decoded.write_bytes(raw)
    return decoded


# -- 2. checksum -------------------------------------------------------------------------------


def verify_checksum(ctx: _Context) -> None:
    assert ctx.report is not None
    if ctx.expected is None:
        return
    total = ctx.image_path.stat().st_size
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        ctx.events.progress("checksum", done, total)

    actual = _sha256_with_progress(ctx.image_path, tick)
    ctx.report.artifact_sha256 = actual
    if actual != ctx.expected:
        raise ArtifactError(
            f"{ctx.image_path} does not match its checksum ({ctx.report.checksum_source}): "
            f"sha256 is {actual}, expected {ctx.expected}; it is corrupt or was changed",
            hint="fetch or build the image again; the target was not touched",
        )


def _sha256_with_progress(path: Path, tick: Callable[[int], None]) -> str:
    import hashlib

    digest = hashlib.sha256()
    last = time.monotonic()
    pending = 0
    with path.open("rb", buffering=0) as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
            pending += len(chunk)
            if time.monotonic() - last > 0.2:
                tick(pending)
                pending, last = 0, time.monotonic()
    tick(pending)
    return digest.hexdigest()


# -- 3. write, 4. verify -----------------------------------------------------------------------


def write_image(ctx: _Context) -> None:
    assert ctx.image is not None
    assert ctx.target is not None
    assert ctx.report is not None
    if not ctx.target.block_device:
        ctx.lock_fd = target_mod.lock_target(ctx.target, ctx.disk)
    ctx.fd = target_mod.open_target(ctx.target, ctx.disk, force=ctx.force)
    if not ctx.target.block_device:
        # A fresh, all-zero file of the target's size: zeros need not be written.
        os.ftruncate(ctx.fd, 0)
        os.ftruncate(ctx.fd, ctx.target.size)
    size = ctx.image.size
    digest = BlockDigest()
    writer = DiskWriter(
        ctx.fd,
        size,
        zero_fill=ctx.target.block_device,
        digest=digest,
        progress=lambda done: ctx.events.progress("write", done, size),
    )
    writer.write_all(ctx.image.chunks())
    ctx.report.written = writer.written
    ctx.report.skipped = writer.skipped
    ctx.report.content_digest = digest.hexdigest()


def verify_written(ctx: _Context) -> None:
    assert ctx.fd is not None
    assert ctx.image is not None
    assert ctx.report is not None
    size = ctx.image.size
    os.fsync(ctx.fd)
    found = read_back_digest(
        ctx.disk, size, progress=lambda done: ctx.events.progress("verify", done, size)
    )
    if found != ctx.report.content_digest:
        raise DeployError(
            f"the data read back from {ctx.target_path} differs from what was written "
            f"(digest {found}, wrote {ctx.report.content_digest})",
            hint="the disk may be failing or something else wrote to it; try again or "
            "use another disk",
        )
    ctx.report.verified = True


# -- 5. table, 6. seed, 7. grow ----------------------------------------------------------------


def _release(ctx: _Context) -> None:
    """Close the target so that sfdisk, e2fsck and resize2fs can open it."""
    if ctx.fd is not None:
        os.fsync(ctx.fd)
        os.close(ctx.fd)
        ctx.fd = None


def fix_table(ctx: _Context) -> None:
    assert ctx.target is not None
    assert ctx.image is not None
    assert ctx.report is not None
    _release(ctx)
    if ctx.layout.table != "gpt" or ctx.target.size == ctx.image.size:
        return
    partitions.relocate_gpt_backup(ctx.disk, ctx.target.block_device, ctx.events)
    ctx.report.gpt_relocated = True


def write_seed_partition(ctx: _Context) -> None:
    assert ctx.target is not None
    assert ctx.seed is not None
    assert ctx.report is not None
    current = partitions.read_target_layout(ctx.disk)
    first, last = layout_mod.seed_partition_start(current.table, ctx.target.size, ctx.seed.size)
    if first <= current.used_end:
        raise DeployError(f"no room for the seed partition after sector {current.used_end}")
    name = "config-2" if SEED_LABELS[ctx.seed.label] == "configdrive" else "cidata"
    added = partitions.add_partition(
        ctx.disk, ctx.target.block_device, current, first, last, name, ctx.events
    )
    fd = os.open(ctx.disk, os.O_RDWR | os.O_CLOEXEC)
    try:
        start = added.start * SECTOR
        if ctx.target.block_device:
            # Zero the partition first: no old signature may linger after the volume.
            target_mod.zero_range(fd, start, added.sectors * SECTOR)
        with ctx.seed.path.open("rb") as source:
            offset = start
            while chunk := source.read(4 << 20):
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    from osbake.firstboot.volume import probe_volume

    if probe_volume(ctx.disk, added.start * SECTOR) != (ctx.seed.filesystem, ctx.seed.label):
        raise DeployError("the seed partition does not read back as the seed volume")
    ctx.report.seed = SeedPartition(
        added.number,
        added.start * SECTOR,
        added.sectors * SECTOR,
        ctx.seed.label,
        ctx.seed.filesystem,
    )


def grow_root(ctx: _Context) -> None:
    assert ctx.target is not None
    assert ctx.report is not None
    current = partitions.read_target_layout(ctx.disk)
    seed_number = ctx.report.seed.number if ctx.report.seed else None
    candidates = [p for p in current.partitions if p.number != seed_number]
    root = max(candidates, key=lambda p: p.end)
    fs = partitions.probe_filesystem(ctx.disk, root.start * SECTOR)
    if fs in (None, "vfat", "swap"):
        raise DeployError(
            f"the last partition ({root.number}{', ' + root.name if root.name else ''}) holds "
            f"{fs or 'no filesystem osbake knows'}, not a root filesystem to grow",
            hint="osbake grows the last partition of the disk, where its images keep the "
            "root; deploy without --grow",
        )
    grown = partitions.grow_partition(ctx.disk, ctx.target.block_device, root.number, ctx.events)
    result = partitions.grow_filesystem(ctx.disk, grown, ctx.target.block_device, ctx.events)
    if result.note:
        ctx.report.notes.append(result.note)
    ctx.report.grown = GrowReport(
        root.number,
        root.sectors * SECTOR,
        grown.sectors * SECTOR,
        result.filesystem,
        result.grown,
    )


def finish(ctx: _Context) -> None:
    assert ctx.target is not None
    assert ctx.report is not None
    _release(ctx)
    if ctx.target.created:
        os.replace(ctx.disk, ctx.target_path)
    if not ctx.target.block_device:
        return
    fd = os.open(ctx.disk, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ctx.report.partitions_reread = target_mod.reread_partitions(fd)
    finally:
        os.close(fd)
    if not ctx.report.partitions_reread:
        ctx.report.notes.append(
            "the kernel did not re-read the partition table (a loop device without "
            "partition scanning?); it sees the new partitions after a reboot or partprobe"
        )
