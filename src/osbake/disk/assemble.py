"""Assemble the disk image: sizes from the tree, the table, file systems, boot code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbake import sandbox
from osbake.disk import bootloader, filesystems
from osbake.disk.layout import DiskPlan, PartitionPlan
from osbake.disk.partition_table import Placed, place, write_table
from osbake.disk.sizes import align_up, format_size
from osbake.errors import OsbakeError
from osbake.recipe.model import FsType, PartitionType

if TYPE_CHECKING:
    from osbake.context import Context


class DiskSizeError(OsbakeError):
    """The contents do not fit the disk layout."""

    exit_code = 2


@dataclass
class AssembledDisk:
    path: Path
    size: int
    placed: list[Placed]
    free: dict[str, int] = field(default_factory=dict)  # per partition, after filling

    def describe(self, disk: DiskPlan) -> dict[str, Any]:
        """The layout as the manifest records it."""
        return {
            "table": str(disk.table),
            "size": self.size,
            "sector_size": disk.sector_size,
            "alignment": disk.alignment,
            "disk_uuid": disk.disk_uuid,
            "partitions": [
                {
                    "number": p.plan.number,
                    "name": p.plan.name,
                    "type": str(p.plan.type),
                    "type_id": p.plan.type_id,
                    "start": p.start,
                    "size": p.size,
                    "fs": str(p.plan.fs) if p.plan.fs else None,
                    "mount": p.plan.mount,
                    "label": p.plan.label,
                    "part_uuid": p.plan.part_uuid,
                    "fs_uuid": (
                        filesystems.vfat_fstab_id(p.plan.fs_uuid)
                        if p.plan.fs == FsType.VFAT
                        else p.plan.fs_uuid
                        if p.plan.fs
                        else None
                    ),
                    "free": self.free.get(p.plan.name),
                }
                for p in self.placed
            ],
        }


def _source(tree: Path, part: PartitionPlan) -> Path:
    assert part.mount is not None
    return tree / part.mount.lstrip("/") if part.mount != "/" else tree


def _nested_mounts(disk: DiskPlan, part: PartitionPlan) -> list[str]:
    """Mount points of other partitions below this one's (their contents are theirs)."""
    assert part.mount is not None
    base = part.mount.rstrip("/") + "/"
    return [
        p.mount
        for p in disk.by_mount()
        if p.mount and p is not part and (part.mount == "/" or p.mount.startswith(base))
    ]


def compute_sizes(ctx: Context, disk: DiskPlan) -> dict[str, int]:
    """Every partition's size in bytes; the 'rest' of a fixed-size disk is left out."""
    sizes: dict[str, int] = {}
    for part in disk.partitions:
        if part.fixed_bytes is not None:
            sizes[part.name] = part.fixed_bytes
        elif part.percent is not None:
            assert disk.size is not None
            sizes[part.name] = int(disk.size * part.percent / 100)
        elif disk.size is None:
            sizes[part.name] = _auto_size(ctx, disk, part)
    for part in disk.partitions:
        _check_contents_fit(ctx, disk, part, sizes)
    return sizes


def _auto_size(ctx: Context, disk: DiskPlan, part: PartitionPlan) -> int:
    if part.fs is None or part.mount is None:
        raise DiskSizeError(
            f"partition '{part.name}' takes the rest of an auto-sized disk, "
            "but has no file system to size it by",
            hint="give it a fixed size",
        )
    usage = filesystems.measure(
        _source(ctx.tree, part), [ctx.tree / m.lstrip("/") for m in _nested_mounts(disk, part)]
    )
    if part.fs == FsType.EXT4:
        return filesystems.ext4_size(usage, disk.free, disk.alignment)
    if part.fs == FsType.BTRFS:
        with sandbox.hidden(ctx.tree, _nested_mounts(disk, part)):
            minimum = filesystems.btrfs_minimum(_source(ctx.tree, part), ctx.workdir, ctx.events)
        return align_up(minimum + disk.free, disk.alignment)
    if part.fs == FsType.VFAT:
        return align_up(
            usage.apparent_bytes + usage.inodes * 4096 + disk.free + 2 * 1024**2, disk.alignment
        )
    raise DiskSizeError(
        f"partition '{part.name}': cannot size {part.fs} automatically", hint="give it a fixed size"
    )


def _check_contents_fit(
    ctx: Context, disk: DiskPlan, part: PartitionPlan, sizes: dict[str, int]
) -> None:
    if part.fs != FsType.EXT4 or part.mount is None or part.name not in sizes:
        return
    usage = filesystems.measure(
        _source(ctx.tree, part), [ctx.tree / m.lstrip("/") for m in _nested_mounts(disk, part)]
    )
    need = filesystems.ext4_minimum(usage)
    have = sizes[part.name]
    if need > have:
        raise DiskSizeError(
            f"partition '{part.name}' ({format_size(have)}) is too small for its files: "
            f"they need {format_size(need)}, {format_size(need - have)} more",
            hint=f"make '{part.name}' at least {format_size(align_up(need, disk.alignment))} "
            "(or the disk larger, or its size auto)",
        )


def assemble(
    ctx: Context, disk: DiskPlan, setup: bootloader.BootSetup, image: Path
) -> AssembledDisk:
    """Make the disk image file `image` from the tree (ctx.tree)."""
    sizes = compute_sizes(ctx, disk)
    placed, total = place(disk, sizes, disk.size)
    rest = next((p for p in placed if p.plan.is_rest and p.plan.name not in sizes), None)
    if rest is not None:
        _check_contents_fit(ctx, disk, rest.plan, {rest.plan.name: rest.size})
    if rest is not None and rest.size <= 0:
        raise DiskSizeError(
            f"no room is left for partition '{rest.plan.name}' on the {format_size(total)} disk",
            hint="make the disk larger",
        )
    with image.open("wb") as handle:
        handle.truncate(total)
    write_table(image, disk, placed, ctx.events)
    result = AssembledDisk(image, total, placed)
    # Deeper mount points first, so each file system is made before its parent hides it.
    for item in sorted(placed, key=lambda p: -(p.plan.mount or "").count("/")):
        _make_filesystem(ctx, disk, item, image, result)
    if setup.core_img is not None:
        bootloader.install_bios(image, disk, placed, setup)
    return result


def _make_filesystem(
    ctx: Context, disk: DiskPlan, item: Placed, image: Path, result: AssembledDisk
) -> None:
    part = item.plan
    if part.fs is None or part.type == PartitionType.BIOS_GRUB:
        return
    ctx.events.log(
        f"making {part.fs} on partition '{part.name}' "
        f"({format_size(item.size)} at {format_size(item.start)})"
    )
    if part.fs == FsType.SWAP:
        swap = ctx.workdir / f"part-{part.name}.img"
        filesystems.make_in_file(
            "swap", swap, item.size, None, label=part.label, uuid=part.fs_uuid, events=ctx.events
        )
        filesystems.copy_into(image, item.start, swap)
        swap.unlink()
        return
    source = _source(ctx.tree, part)
    nested = _nested_mounts(disk, part)
    with sandbox.hidden(ctx.tree, nested):
        if part.fs == FsType.EXT4:
            usage = filesystems.measure(source)
            filesystems.make_ext4(
                image,
                item.start,
                item.size,
                source,
                label=part.label,
                uuid=part.fs_uuid,
                usage=usage,
                workdir=ctx.workdir,
                epoch=ctx.epoch,
                events=ctx.events,
            )
            result.free[part.name] = filesystems.ext4_free_bytes(image, item.start, ctx.events)
        elif part.fs == FsType.VFAT:
            filesystems.make_vfat(
                image,
                item.start,
                item.size,
                source,
                label=part.label,
                uuid=part.fs_uuid,
                sector_size=disk.sector_size,
                epoch=ctx.epoch,
                events=ctx.events,
            )
        elif part.fs == FsType.BTRFS:
            tmp = ctx.workdir / f"part-{part.name}.img"
            filesystems.make_in_file(
                "btrfs",
                tmp,
                item.size,
                source,
                label=part.label,
                uuid=part.fs_uuid,
                events=ctx.events,
            )
            filesystems.copy_into(image, item.start, tmp)
            tmp.unlink()
