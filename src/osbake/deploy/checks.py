"""Step 1 of a deploy: check the image, its checksum source, the seed and the target.

Nothing is written yet: whatever is wrong is found before the target is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from osbake.deploy import layout as layout_mod
from osbake.deploy import target as target_mod
from osbake.deploy.context import Context
from osbake.deploy.images import open_image
from osbake.deploy.layout import SECTOR, read_layout
from osbake.deploy.report import DeployReport
from osbake.deploy.seeds import load_seed
from osbake.errors import ArtifactError, UsageError

# A target file deploy creates (--size): sparse, but a size past this is a typo.
MAX_TARGET_FILE = 1 << 46  # 64 TiB


def check_size(size: int | None) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % SECTOR:
        raise UsageError(f"--size {size!r} must be a positive multiple of 512 bytes")
    if size > MAX_TARGET_FILE:
        raise UsageError(
            f"--size {size} bytes is more than osbake creates ({MAX_TARGET_FILE >> 40} TiB)",
            hint="check the unit (8G is 8 GiB); write to a block device for a bigger disk",
        )


def check(ctx: Context) -> None:
    ctx.image = open_image(ctx.image_path)
    head = ctx.image.head()
    ctx.layout = read_layout(head)
    if not ctx.raw:
        _check_disk_image(ctx, head)
    ctx.expected, source = _expected_sha256(ctx)
    if ctx.seed_path is not None:
        ctx.seed = load_seed(ctx.seed_path, ctx.configdrive, ctx.tmp, ctx.events)
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


def _check_disk_image(ctx: Context, head: bytes) -> None:
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


def _expected_sha256(ctx: Context) -> tuple[str | None, str | None]:
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
