"""Assemble the disk image: sizes from the tree, the table, file systems, boot code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbake import sandbox
from osbake.disk import bootloader, filesystems, lvm
from osbake.disk.layout import LUKS_OVERHEAD, DiskPlan, PartitionPlan, VolumeGroupPlan
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
    free: dict[str, int] = field(default_factory=dict)  # per key(), after filling
    volumes: list[Placed] = field(default_factory=list)  # logical volumes, start on the disk

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
                    **_describe_luks(p.plan),
                }
                for p in self.placed
            ],
            **({"volume_groups": self._describe_groups(disk)} if disk.volume_groups else {}),
        }

    def _describe_groups(self, disk: DiskPlan) -> list[dict[str, Any]]:
        placed = {key(v.plan): v for v in self.volumes}
        return [
            {
                "name": group.name,
                "uuid": lvm.format_id(group.id),
                "pv": group.pv,
                "pv_uuid": lvm.format_id(group.pv_id),
                "extent_size": group.extent_size,
                "volumes": [
                    {
                        "name": v.name,
                        "device": group.device(v),
                        "start": placed[key(v)].start,
                        "size": placed[key(v)].size,
                        "fs": str(v.fs) if v.fs else None,
                        "mount": v.mount,
                        "label": v.label,
                        "lv_uuid": v.part_uuid,
                        "fs_uuid": v.fs_uuid if v.fs else None,
                        "free": self.free.get(key(v)),
                        **_describe_luks(v),
                    }
                    for v in group.volumes
                ],
            }
            for group in disk.volume_groups
        ]


def _describe_luks(part: PartitionPlan) -> dict[str, Any]:
    """The manifest's `luks` of an encrypted partition or logical volume (never its key)."""
    if part.luks is None:
        return {}
    return {
        "luks": {
            "name": part.luks.name,
            "uuid": part.luks.uuid,
            "unlock": str(part.luks.unlock),
            "device": f"/dev/mapper/{part.luks.name}",
        }
    }


def key(part: PartitionPlan) -> str:
    """A partition's name, or VG/LV for a logical volume (partition names have no '/')."""
    return f"{part.volume_group}/{part.name}" if part.volume_group else part.name


def what(part: PartitionPlan) -> str:
    kind = "logical volume" if part.volume_group else "partition"
    return f"{kind} '{key(part)}'"


def _source(tree: Path, part: PartitionPlan) -> Path:
    assert part.mount is not None
    return tree / part.mount.lstrip("/") if part.mount != "/" else tree


def _nested_mounts(disk: DiskPlan, part: PartitionPlan) -> list[str]:
    """Mount points of other partitions below this one's (their contents are theirs)."""
    assert part.mount is not None
    base = part.mount.rstrip("/") + "/"
    found = [
        p.mount
        for p in disk.by_mount()
        if p.mount and p is not part and (part.mount == "/" or p.mount.startswith(base))
    ]
    # Only the outermost: hiding /boot hides /boot/efi (whose folder then is not there).
    return [m for m in found if not any(m.startswith(o.rstrip("/") + "/") for o in found)]


def compute_sizes(ctx: Context, disk: DiskPlan) -> dict[str, int]:
    """Every partition's and volume's size in bytes (by key()); the 'rest' of a fixed-size
    disk, and of a volume group on a partition of fixed size, are left out."""
    sizes: dict[str, int] = {}
    pvs = {g.pv: g for g in disk.volume_groups}
    for part in disk.partitions:
        if part.fixed_bytes is not None:
            sizes[part.name] = part.fixed_bytes
        elif part.percent is not None:
            assert disk.size is not None
            sizes[part.name] = int(disk.size * part.percent / 100)
        elif disk.size is None:
            if part.name in pvs:
                sizes[part.name] = _group_size(ctx, disk, pvs[part.name], sizes)
            else:
                sizes[part.name] = _auto_size(ctx, disk, part)
    for volume in disk.volumes:
        if volume.fixed_bytes is not None:
            sizes[key(volume)] = volume.fixed_bytes
    for part in disk.filesystems:
        _check_contents_fit(ctx, disk, part, sizes)
    return sizes


def _group_size(ctx: Context, disk: DiskPlan, group: VolumeGroupPlan, sizes: dict[str, int]) -> int:
    """A physical volume sized from its volumes (each sized from its contents if 'rest')."""
    total = lvm.PE_START
    for volume in group.volumes:
        size = volume.fixed_bytes
        if size is None:
            size = sizes[key(volume)] = _auto_size(ctx, disk, volume)
        total += align_up(size, group.extent_size)
    return total


def place_volumes(disk: DiskPlan, placed: list[Placed], sizes: dict[str, int]) -> list[Placed]:
    """Each logical volume's extents, in order from the first, and its place on the disk."""
    result = []
    for group in disk.volume_groups:
        pv = next(p for p in placed if p.plan.name == group.pv)
        capacity = (pv.size - lvm.PE_START) // group.extent_size
        fixed = sum(
            -(-sizes[key(v)] // group.extent_size) for v in group.volumes if key(v) in sizes
        )
        if fixed > capacity:
            raise DiskSizeError(
                f"the logical volumes of '{group.name}' need {fixed} extents of "
                f"{format_size(group.extent_size)}, partition '{pv.plan.name}' holds {capacity}",
                hint=f"make partition '{pv.plan.name}' larger or the volumes smaller",
            )
        first = 0
        for volume in group.volumes:
            if key(volume) in sizes:
                extents = -(-sizes[key(volume)] // group.extent_size)
            else:
                extents = capacity - fixed
                if extents <= 0:
                    raise DiskSizeError(
                        f"no room is left for {what(volume)} in partition '{pv.plan.name}'",
                        hint=f"make partition '{pv.plan.name}' larger",
                    )
            start = pv.start + lvm.PE_START + first * group.extent_size
            result.append(Placed(volume, start, extents * group.extent_size))
            first += extents
    return result


def lvm_groups(disk: DiskPlan, placed: list[Placed], volumes: list[Placed]) -> list[lvm.Group]:
    """The volume groups as lvm.py writes them."""
    groups = []
    for group in disk.volume_groups:
        pv = next(p for p in placed if p.plan.name == group.pv)
        first = pv.start + lvm.PE_START
        groups.append(
            lvm.Group(
                name=group.name,
                id=group.id,
                pv_id=group.pv_id,
                pv_size=pv.size,
                extent_size=group.extent_size,
                volumes=[
                    lvm.Volume(
                        name=v.plan.name,
                        id=v.plan.part_uuid.replace("-", ""),
                        start_extent=(v.start - first) // group.extent_size,
                        extents=v.size // group.extent_size,
                    )
                    for v in volumes
                    if v.plan.volume_group == group.name
                ],
                creation_time=int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0),
            )
        )
    return groups


def _auto_size(ctx: Context, disk: DiskPlan, part: PartitionPlan) -> int:
    if part.luks is not None:
        return _fs_auto_size(ctx, disk, part) + LUKS_OVERHEAD
    return _fs_auto_size(ctx, disk, part)


def _fs_auto_size(ctx: Context, disk: DiskPlan, part: PartitionPlan) -> int:
    if part.fs is None or part.mount is None:
        raise DiskSizeError(
            f"{what(part)} takes the rest of an auto-sized disk, "
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
        f"{what(part)}: cannot size {part.fs} automatically", hint="give it a fixed size"
    )


def _check_contents_fit(
    ctx: Context, disk: DiskPlan, part: PartitionPlan, sizes: dict[str, int]
) -> None:
    if part.fs != FsType.EXT4 or part.mount is None or key(part) not in sizes:
        return
    usage = filesystems.measure(
        _source(ctx.tree, part), [ctx.tree / m.lstrip("/") for m in _nested_mounts(disk, part)]
    )
    need = filesystems.ext4_minimum(usage)
    have = sizes[key(part)] - (LUKS_OVERHEAD if part.luks else 0)
    if need > have:
        raise DiskSizeError(
            f"{what(part)} ({format_size(have)}) is too small for its files: "
            f"they need {format_size(need)}, {format_size(need - have)} more",
            hint=f"make '{key(part)}' at least {format_size(align_up(need, disk.alignment))} "
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
    volumes = place_volumes(disk, placed, sizes)
    for item in volumes:
        if item.plan.is_rest and key(item.plan) not in sizes:
            _check_contents_fit(ctx, disk, item.plan, {key(item.plan): item.size})
    with image.open("wb") as handle:
        handle.truncate(total)
    write_table(image, disk, placed, ctx.events)
    result = AssembledDisk(image, total, placed, volumes=volumes)
    # Deeper mount points first, so each file system is made before its parent hides it.
    for item in sorted([*placed, *volumes], key=lambda p: -(p.plan.mount or "").count("/")):
        _make_filesystem(ctx, disk, item, image, result)
    for group, pv in zip(lvm_groups(disk, placed, volumes), disk.volume_groups, strict=True):
        holder = next(p for p in placed if p.plan.name == pv.pv)
        ctx.events.log(
            f"writing LVM volume group '{group.name}' on partition '{holder.plan.name}' "
            f"({len(group.volumes)} logical volumes, {group.pe_count} extents)"
        )
        lvm.write_pv(image, holder.start, group, f"/dev/disk/by-partuuid/{holder.plan.part_uuid}")
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
        f"making {part.fs} on {what(part)} ({format_size(item.size)} at {format_size(item.start)})"
    )
    if part.fs == FsType.SWAP:
        swap = ctx.workdir / f"part-{key(part).replace('/', '-')}.img"
        filesystems.make_in_file(
            "swap", swap, item.size, None, label=part.label, uuid=part.fs_uuid, events=ctx.events
        )
        filesystems.copy_into(image, item.start, swap)
        swap.unlink()
        return
    if part.luks is not None:
        _make_encrypted(ctx, disk, item, image, result)
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
            result.free[key(part)] = filesystems.ext4_free_bytes(image, item.start, ctx.events)
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
            tmp = ctx.workdir / f"part-{key(part).replace('/', '-')}.img"
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


def _make_encrypted(
    ctx: Context, disk: DiskPlan, item: Placed, image: Path, result: AssembledDisk
) -> None:
    """The file system in a file of its own, encrypted in place, copied into the image.

    `cryptsetup reencrypt --encrypt` works on a file offline (no device-mapper): it
    moves the file system up by the header (`--reduce-device-size`, so the file system
    is made that much smaller) and encrypts it with the kernel's crypto API.
    """
    part, luks = item.plan, item.plan.luks
    assert luks is not None and part.fs is not None
    tmp = ctx.workdir / f"part-{key(part).replace('/', '-')}.img"
    with tmp.open("wb") as handle:
        handle.truncate(item.size)
    source = _source(ctx.tree, part)
    size = item.size - LUKS_OVERHEAD
    with sandbox.hidden(ctx.tree, _nested_mounts(disk, part)):
        if part.fs == FsType.EXT4:
            filesystems.make_ext4(
                tmp,
                0,
                size,
                source,
                label=part.label,
                uuid=part.fs_uuid,
                usage=filesystems.measure(source),
                workdir=ctx.workdir,
                epoch=ctx.epoch,
                events=ctx.events,
            )
            result.free[key(part)] = filesystems.ext4_free_bytes(tmp, 0, ctx.events)
        else:
            inner = ctx.workdir / "luks-inner.img"
            filesystems.make_in_file(
                str(part.fs), inner, size, source, label=part.label, uuid=part.fs_uuid,
                events=ctx.events,
            )  # fmt: skip
            filesystems.copy_into(tmp, 0, inner)
            inner.unlink()
    ctx.events.log(f"encrypting {what(part)} with LUKS2 ({luks.name}, unlock: {luks.unlock})")
    filesystems.luks_encrypt(tmp, luks.uuid, luks.read_key(), LUKS_OVERHEAD, ctx.events)
    filesystems.copy_into(image, item.start, tmp)
    tmp.unlink()
