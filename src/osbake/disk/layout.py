"""Disk layouts: where they come from, the checks before any work, and identifiers.

A layout comes from the recipe's `disk:`, else from the last element (in
dependency order) that supplies a default. Element defaults adapt to `boot:` (an
ESP only with UEFI, a bios-grub partition only with BIOS); a recipe's layout is
taken as written and checked.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from osbake.arch import Arch
from osbake.disk import lvm
from osbake.disk.plans import (
    LUKS_KEY_LIMIT,
    LUKS_OVERHEAD,
    DiskPlan,
    LuksPlan,
    PartitionPlan,
    VolumeGroupPlan,
)
from osbake.disk.sizes import MiB, align_down, align_up, format_size, parse_size
from osbake.errors import Location, RecipeError
from osbake.formats import FormatError
from osbake.recipe import Firmware, Recipe, files, locate
from osbake.recipe.loader import source_folder
from osbake.recipe.model import (
    Disk,
    FsType,
    LogicalVolume,
    Luks,
    Partition,
    PartitionTable,
    PartitionType,
    VolumeGroup,
)

if TYPE_CHECKING:
    from osbake.elements import Element

NAMESPACE = uuid.UUID("6f3b1f7e-3f0b-5c1e-9a5e-6f7362616b65")

# GPT partition type GUIDs (UEFI spec and the Discoverable Partitions Specification);
# those of root and /usr depend on the architecture (osbake.arch).
GPT_TYPES = {
    PartitionType.ESP: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    PartitionType.BIOS_GRUB: "21686148-6449-6E6F-744E-656564454649",
    PartitionType.LINUX: "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    PartitionType.SWAP: "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
    PartitionType.XBOOTLDR: "BC13C2FF-59E6-4262-A352-B275FD6F7172",
    PartitionType.HOME: "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
    PartitionType.SRV: "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
    PartitionType.VAR: "4D21B016-B534-45C2-A9FB-5C16E091FD2D",
    PartitionType.TMP: "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1",
    PartitionType.LVM: "E6D6D379-F507-44C2-A23C-238F2A3DF928",
}
MBR_TYPES = {
    PartitionType.ESP: "ef",
    PartitionType.SWAP: "82",
    PartitionType.LVM: "8e",
}
MBR_LINUX = "83"

# Room the boot files need on the ESP (with FAT's own overhead), by firmware.
ESP_NEEDS = {Firmware.UEFI: 6 * MiB, Firmware.UEFI_SECUREBOOT: 10 * MiB}
SUPPORTED_FS = (FsType.EXT4, FsType.VFAT, FsType.BTRFS, FsType.SWAP)

__all__ = [
    "LUKS_KEY_LIMIT",
    "LUKS_OVERHEAD",
    "DiskPlan",
    "LuksPlan",
    "PartitionPlan",
    "VolumeGroupPlan",
    "derived_uuid",
    "plan_disk",
]


def derived_uuid(recipe: Recipe, arch: str, *parts: str) -> str:
    """A UUID that depends only on the image's identity, so rebuilds give the same one."""
    identity = "/".join([recipe.name, recipe.variant or "", arch, *parts])
    return str(uuid.uuid5(NAMESPACE, identity))


def layout_source(recipe: Recipe, elements: list[Element]) -> tuple[Disk | None, str | None]:
    """The layout to use and where it came from ('recipe', an element name, or None)."""
    if recipe.disk is not None:
        return recipe.disk, "recipe"
    for element in reversed(elements):
        if element.spec.disk is not None:
            return element.spec.disk, element.name
    return None, None


def plan_disk(
    recipe: Recipe, arch: str, elements: list[Element], disk_outputs: Sequence[str]
) -> DiskPlan | None:
    """The checked disk plan, or None when the image has no disk. Raises RecipeError.

    `disk_outputs` are the recipe's outputs made from the disk (each output says so
    itself: osbake.outputs.needs_disk); the caller passes them, so the layout does
    not depend on the outputs.
    """
    disk, source = layout_source(recipe, elements)
    if disk is None:
        if disk_outputs:
            raise RecipeError(
                f"the output '{disk_outputs[0]}' is a disk image, but the recipe has no disk "
                "layout",
                location=locate(recipe, ("outputs",)),
                hint="add the 'vm' element (or 'bare-metal'), or a 'disk:' layout",
            )
        return None
    partitions = list(disk.partitions)
    if source != "recipe":
        # Element defaults adapt to the firmware the image boots with.
        boot = set(recipe.boot)
        partitions = [
            p
            for p in partitions
            if not (p.type == PartitionType.ESP and not any(f.is_uefi for f in boot))
            and not (p.type == PartitionType.BIOS_GRUB and Firmware.BIOS not in boot)
        ]
    where = ("disk",) if source == "recipe" else None
    element_loc = None
    if source not in (None, "recipe"):
        element = next(e for e in elements if e.name == source)
        element_loc = element.location("disk")
    checker = _Checker(recipe, disk, partitions, where, element_loc, source or "")
    checker.check()
    plans = []
    booted = extlinux_partition(partitions) if Firmware.EXTLINUX in recipe.boot else None
    for number, partition in enumerate(partitions, start=1):
        plans.append(
            PartitionPlan(
                number=number,
                name=partition.name,
                type=partition.type,
                size=partition.size,
                fs=partition.fs,
                mount=partition.mount,
                label=partition.label or _default_label(partition),
                options=partition.options,
                part_uuid=derived_uuid(recipe, arch, "partition", partition.name),
                fs_uuid=derived_uuid(recipe, arch, "filesystem", partition.name),
                type_id=_type_id(disk.table, partition, arch),
                legacy_bootable=number - 1 == booted and disk.table == PartitionTable.GPT,
                luks=_luks_plan(
                    recipe,
                    arch,
                    partition.luks,
                    ("disk", "partitions", number - 1),
                    f"partition '{partition.name}'",
                    partition.name,
                    partition.name,
                ),
            )
        )
    return DiskPlan(
        table=disk.table,
        sector_size=disk.sector_size,
        alignment=parse_size(disk.alignment),
        size=None if disk.size == "auto" else parse_size(disk.size),
        free=parse_size(disk.free),
        disk_uuid=derived_uuid(recipe, arch, "disk"),
        partitions=plans,
        volume_groups=[
            _group_plan(recipe, arch, partitions, g, group)
            for g, group in enumerate(disk.volume_groups)
        ],
    )


def extlinux_partition(partitions: Sequence[Partition]) -> int | None:
    """The index of the partition U-Boot reads extlinux.conf and the kernel from: the
    one mounted on /boot, else on / (None: that file system is on a logical volume)."""
    for mount in ("/boot", "/"):
        for index, partition in enumerate(partitions):
            if partition.mount == mount:
                return index
    return None


def _luks_plan(
    recipe: Recipe,
    arch: str,
    luks: Luks | None,
    at: tuple[str | int, ...],
    what: str,
    mapper: str,
    *names: str,
) -> LuksPlan | None:
    """The LUKS container of a partition or logical volume (`what`, at `at` in the
    recipe), opened as /dev/mapper/<mapper>_crypt; `names` derive its UUID."""
    if luks is None:
        return None
    where = (*at, "luks", "key_file")
    folder = source_folder(recipe, where)
    try:
        key = files.read_source(folder, luks.key_file, LUKS_KEY_LIMIT)
    except FormatError as exc:
        raise RecipeError(exc.message, location=locate(recipe, where), hint=exc.hint) from None
    if not key:
        raise RecipeError(
            f"the LUKS key file {luks.key_file} of {what} is empty",
            location=locate(recipe, where),
            hint="put the key or passphrase in it",
        )
    return LuksPlan(
        name=f"{mapper}_crypt",
        uuid=derived_uuid(recipe, arch, "luks", *names),
        unlock=luks.unlock,
        key_file=luks.key_file,
        key_folder=str(folder),
        key_sha256=hashlib.sha256(key).hexdigest(),
    )


def _group_plan(
    recipe: Recipe, arch: str, partitions: list[Partition], g: int, group: VolumeGroup
) -> VolumeGroupPlan:
    pv = next(p for p in partitions if p.vg == group.name)
    volumes = [
        PartitionPlan(
            number=0,
            name=volume.name,
            type=PartitionType.SWAP if volume.fs == FsType.SWAP else PartitionType.LINUX,
            size=volume.size,
            fs=volume.fs,
            mount=volume.mount,
            label=volume.label or _default_label(volume),
            options=volume.options,
            part_uuid=lvm.format_id(
                lvm.lvm_id(derived_uuid(recipe, arch, "lv", group.name, volume.name))
            ),
            fs_uuid=derived_uuid(recipe, arch, "filesystem", group.name, volume.name),
            type_id="lvm",
            volume_group=group.name,
            luks=_luks_plan(
                recipe,
                arch,
                volume.luks,
                ("disk", "volume_groups", g, "volumes", v),
                f"logical volume '{group.name}/{volume.name}'",
                lvm.mapper_name(group.name, volume.name),
                group.name,
                volume.name,
            ),
        )
        for v, volume in enumerate(group.volumes)
    ]
    return VolumeGroupPlan(
        name=group.name,
        id=lvm.lvm_id(derived_uuid(recipe, arch, "vg", group.name)),
        pv=pv.name,
        pv_id=lvm.lvm_id(derived_uuid(recipe, arch, "pv", pv.name)),
        extent_size=parse_size(group.extent_size),
        volumes=volumes,
    )


def _default_label(partition: Partition | LogicalVolume) -> str | None:
    if partition.fs == FsType.VFAT:
        return partition.name.upper()[:11]
    if partition.fs in (FsType.EXT4, FsType.BTRFS, FsType.XFS):
        return partition.name[:16]
    return None


def _type_id(table: PartitionTable, partition: Partition, arch: str) -> str:
    if table == PartitionTable.MBR:
        return MBR_TYPES.get(partition.type, MBR_LINUX)
    info = Arch(arch).info
    if partition.type == PartitionType.LINUX and partition.mount == "/":
        return info.gpt_root
    if partition.type == PartitionType.USR:
        return info.gpt_usr or GPT_TYPES[PartitionType.LINUX]
    return GPT_TYPES.get(partition.type, GPT_TYPES[PartitionType.LINUX])


class _Checker:
    """The checks made before any work, each with the partition and the fix."""

    def __init__(
        self,
        recipe: Recipe,
        disk: Disk,
        partitions: list[Partition],
        where: tuple[str, ...] | None,
        element_loc: Location | None,
        source: str,
    ) -> None:
        self.recipe = recipe
        self.disk = disk
        self.partitions = partitions
        self.where = where
        self.element_loc = element_loc
        self.source = source

    def fail(
        self, message: str, hint: str, index: int | None = None, key: str | None = None
    ) -> RecipeError:
        if self.where is not None:
            path: tuple[str | int, ...] = self.where
            if index is not None:
                path = (*path, "partitions", index)
                if key:
                    path = (*path, key)
            elif key:
                path = (*path, key)
            location: Location | None = locate(self.recipe, path)
        else:
            location = self.element_loc
            message = f"{message} (in the default layout of element '{self.source}')"
        return RecipeError(message, location=location, hint=hint)

    def fail_group(
        self, message: str, hint: str, group: int, volume: int | None = None, key: str = ""
    ) -> RecipeError:
        """An error about a volume group (or one of its logical volumes)."""
        if self.where is None:
            return self.fail(message, hint)
        path: tuple[str | int, ...] = (*self.where, "volume_groups", group)
        if volume is not None:
            path = (*path, "volumes", volume)
        if key:
            path = (*path, key)
        return RecipeError(message, location=locate(self.recipe, path), hint=hint)

    def check(self) -> None:
        disk, parts = self.disk, self.partitions
        boot = set(self.recipe.boot)
        if not parts:
            raise self.fail(
                "the disk has no partitions",
                "add partitions, e.g. a root "
                "partition: {name: root, size: rest, fs: ext4, mount: /}",
            )
        names: dict[str, int] = {}
        mounts: dict[str, int] = {}
        for index, part in enumerate(parts):
            if part.name in names:
                raise self.fail(
                    f"two partitions are named '{part.name}'",
                    "give each partition its own name",
                    index,
                    "name",
                )
            names[part.name] = index
            if part.mount:
                if part.mount in mounts:
                    raise self.fail(
                        f"two partitions are mounted on {part.mount} "
                        f"('{parts[mounts[part.mount]].name}' and '{part.name}')",
                        "an image has one root; mount the other somewhere else",
                        index,
                        "mount",
                    )
                mounts[part.mount] = index
                if part.fs is None or part.fs == FsType.SWAP:
                    raise self.fail(
                        f"partition '{part.name}' has a mount point but no file system",
                        "add fs: ext4 (or vfat, btrfs)",
                        index,
                        "fs",
                    )
            if part.fs == FsType.XFS:
                raise self.fail(
                    f"partition '{part.name}': osbake cannot make xfs from a tree offline "
                    "(Debian 12's mkfs.xfs cannot populate from a folder)",
                    "use fs: ext4 or fs: btrfs",
                    index,
                    "fs",
                )
            if part.type == PartitionType.ESP and part.fs != FsType.VFAT:
                raise self.fail(
                    f"the EFI system partition '{part.name}' must be vfat",
                    "set fs: vfat on it",
                    index,
                    "fs",
                )
            if part.type == PartitionType.BIOS_GRUB:
                if disk.table != PartitionTable.GPT:
                    raise self.fail(
                        f"partition '{part.name}' is a bios-grub partition, which only "
                        "exists on GPT disks",
                        "use table: gpt, or drop it (on MBR, GRUB goes in the gap before "
                        "the first partition)",
                        index,
                        "type",
                    )
                if part.fs or part.mount:
                    raise self.fail(
                        f"the bios-grub partition '{part.name}' holds GRUB's "
                        "core image, not a file system",
                        "remove fs and mount from it",
                        index,
                    )
            if (part.type == PartitionType.SWAP) != (part.fs == FsType.SWAP):
                raise self.fail(
                    f"partition '{part.name}': a swap partition has type swap and fs swap",
                    "set both type: swap and fs: swap",
                    index,
                )
            if part.fs and part.fs != FsType.SWAP and not part.mount:
                raise self.fail(
                    f"partition '{part.name}' has a file system ({part.fs}) but no mount "
                    "point: osbake fills each file system from the tree at its mount point",
                    f"add mount: (e.g. /srv/{part.name}; it starts empty) or remove fs",
                    index,
                    "fs",
                )
            self._check_physical_volume(part, index)
            self._check_luks(part, f"partition '{part.name}'", index)
            if part.type == PartitionType.ESP and part.mount not in (None, "/boot/efi"):
                raise self.fail(
                    f"the EFI system partition '{part.name}' is mounted on {part.mount}: "
                    "GRUB and shim are installed under /boot/efi",
                    "use mount: /boot/efi",
                    index,
                    "mount",
                )
        volume_mounts = self._check_volumes(mounts)
        if "/" not in mounts and "/" not in volume_mounts:
            raise self.fail(
                "no partition is mounted on /",
                "add a root partition: {name: root, size: rest, fs: ext4, mount: /}",
            )
        rests = [i for i, p in enumerate(parts) if p.size == "rest"]
        if len(rests) > 1:
            raise self.fail(
                f"partitions '{parts[rests[0]].name}' and '{parts[rests[1]].name}'"
                " both take the rest of the disk",
                "give one of them a size",
                rests[1],
                "size",
            )
        self._check_boot(boot)
        self._check_sizes()

    def _check_luks(
        self,
        part: Partition | LogicalVolume,
        what: str,
        index: int,
        volume: int | None = None,
    ) -> None:
        """The LUKS of partition `index`, or of logical volume `volume` of volume group
        `index` (`what` names it in messages)."""
        if part.luks is None:
            return

        def fail(message: str, hint: str, key: str) -> RecipeError:
            if volume is None:
                return self.fail(message, hint, index, key)
            return self.fail_group(message, hint, index, volume, key)

        if self.where is None:
            raise fail(
                f"{what} is encrypted: an element's layout cannot hold a key",
                "write the layout in the recipe's disk:",
                "",
            )
        kind = "partitions" if isinstance(part, Partition) else "logical volumes"
        if part.fs not in (FsType.EXT4, FsType.BTRFS) or (
            isinstance(part, Partition)
            and part.type in (PartitionType.ESP, PartitionType.BIOS_GRUB, PartitionType.LVM)
        ):
            raise fail(
                f"{what}: osbake encrypts ext4 and btrfs {kind} with LUKS, not "
                f"{part.fs or getattr(part, 'type', 'a volume without a file system')}",
                "remove luks from it (the ESP, /boot and swap stay unencrypted)",
                "luks",
            )
        if part.mount == "/boot":
            raise fail(
                f"{what} holds /boot, which GRUB reads before anything is unlocked",
                "remove luks from it",
                "luks",
            )
        if part.mount == "/" and not any(
            p.mount == "/boot" for p in self.partitions if p.luks is None
        ):
            raise fail(
                f"the root {what} is encrypted, so GRUB cannot read the kernel from it",
                "add an unencrypted /boot partition: {name: boot, size: 512MiB, fs: ext4, "
                "mount: /boot}",
                "luks",
            )
        fixed = part.size != "rest" and not part.size.endswith("%")
        if fixed and parse_size(part.size) < 2 * LUKS_OVERHEAD:
            raise fail(
                f"{what} ({part.size}) is too small for LUKS: its "
                f"header and reencryption take {format_size(LUKS_OVERHEAD)}",
                f"make it at least {format_size(2 * LUKS_OVERHEAD)}",
                "size",
            )

    def _check_physical_volume(self, part: Partition, index: int) -> None:
        if part.type == PartitionType.LVM and part.vg is None:
            raise self.fail(
                f"partition '{part.name}' has type lvm but names no volume group",
                "add vg: vg0, and a volume group of that name under disk.volume_groups",
                index,
                "type",
            )
        if part.vg is not None and part.type != PartitionType.LVM:
            raise self.fail(
                f"partition '{part.name}' holds volume group '{part.vg}', so its type is lvm",
                "set type: lvm",
                index,
                "type",
            )
        if part.type == PartitionType.LVM and (part.fs or part.mount):
            raise self.fail(
                f"partition '{part.name}' is an LVM physical volume: its file systems are "
                "on its logical volumes",
                "remove fs and mount from it, and give them to a logical volume",
                index,
            )

    def _check_volumes(self, mounts: dict[str, int]) -> set[str]:
        """The volume groups' checks; returns the mount points of the logical volumes."""
        parts, groups = self.partitions, self.disk.volume_groups
        holders = {p.vg: i for i, p in enumerate(parts) if p.vg}
        declared = {g.name for g in groups}
        for index, part in enumerate(parts):
            if part.vg and part.vg not in declared:
                raise self.fail(
                    f"partition '{part.name}' holds volume group '{part.vg}', which "
                    "disk.volume_groups does not declare",
                    f"add volume_groups: [{{name: {part.vg}, volumes: [...]}}]",
                    index,
                    "vg",
                )
        seen: set[str] = set()
        volume_mounts: dict[str, str] = {}
        for g, group in enumerate(groups):
            if group.name in seen:
                raise self.fail_group(
                    f"two volume groups are named '{group.name}'",
                    "give each its own name",
                    g,
                    key="name",
                )
            seen.add(group.name)
            pvs = [p.name for p in parts if p.vg == group.name]
            if not pvs:
                raise self.fail_group(
                    f"volume group '{group.name}' is on no partition",
                    f"add a partition {{name: pv0, type: lvm, size: rest, vg: {group.name}}}",
                    g,
                )
            if len(pvs) > 1:
                raise self.fail_group(
                    f"volume group '{group.name}' is on two partitions ('{pvs[0]}' and "
                    f"'{pvs[1]}'): osbake makes a volume group on one partition",
                    f"keep one partition with vg: {group.name}, and make it larger",
                    g,
                )
            if not group.volumes:
                raise self.fail_group(
                    f"volume group '{group.name}' has no logical volumes",
                    "add volumes: [{name: root, size: rest, fs: ext4, mount: /}]",
                    g,
                )
            names: set[str] = set()
            rest: str | None = None
            for v, volume in enumerate(group.volumes):
                where = f"logical volume '{group.name}/{volume.name}'"
                if volume.name in names:
                    raise self.fail_group(
                        f"volume group '{group.name}' has two logical volumes named "
                        f"'{volume.name}'",
                        "give each its own name",
                        g,
                        v,
                        "name",
                    )
                names.add(volume.name)
                if volume.size == "rest":
                    if rest is not None:
                        raise self.fail_group(
                            f"logical volumes '{rest}' and '{volume.name}' both take the rest "
                            f"of volume group '{group.name}'",
                            "give one of them a size",
                            g,
                            v,
                            "size",
                        )
                    rest = volume.name
                if volume.mount:
                    other = (
                        f"partition '{parts[mounts[volume.mount]].name}'"
                        if volume.mount in mounts
                        else volume_mounts.get(volume.mount)
                    )
                    if other:
                        raise self.fail_group(
                            f"{other} and {where} are both mounted on {volume.mount}",
                            "mount one of them somewhere else",
                            g,
                            v,
                            "mount",
                        )
                    volume_mounts[volume.mount] = where
                    if volume.fs is None or volume.fs == FsType.SWAP:
                        raise self.fail_group(
                            f"{where} has a mount point but no file system",
                            "add fs: ext4 (or btrfs)",
                            g,
                            v,
                            "fs",
                        )
                if volume.fs == FsType.XFS:
                    raise self.fail_group(
                        f"{where}: osbake cannot make xfs from a tree offline",
                        "use fs: ext4 or fs: btrfs",
                        g,
                        v,
                        "fs",
                    )
                if volume.fs and volume.fs != FsType.SWAP and not volume.mount:
                    raise self.fail_group(
                        f"{where} has a file system ({volume.fs}) but no mount point",
                        f"add mount: (e.g. /srv/{volume.name}) or remove fs",
                        g,
                        v,
                        "fs",
                    )
                self._check_luks(volume, where, g, v)
            self._check_group_fits(g, group, parts[holders[group.name]])
        if "/" in volume_mounts and self.recipe.kernel == "none":
            raise self.fail(
                "the root file system is on LVM, which only an initramfs with lvm2 can "
                "mount, but the image has no kernel (kernel: none)",
                "set kernel: cloud (or generic), or put the root on a partition",
            )
        return set(volume_mounts)

    def _check_group_fits(self, g: int, group: VolumeGroup, pv: Partition) -> None:
        """Fixed-size logical volumes must fit a physical volume of known size."""
        if pv.size == "rest" or pv.size.endswith("%"):
            return  # sized with the disk: checked when the disk is assembled
        extent = parse_size(group.extent_size)
        capacity = align_up(parse_size(pv.size), parse_size(self.disk.alignment)) - lvm.PE_START
        capacity = align_down(max(0, capacity), extent)
        used = 0
        for v, volume in enumerate(group.volumes):
            if volume.size == "rest":
                continue
            used += align_up(parse_size(volume.size), extent)
            if used > capacity:
                raise self.fail_group(
                    f"logical volume '{group.name}/{volume.name}' "
                    f"({format_size(parse_size(volume.size))}) does not fit on partition "
                    f"'{pv.name}': its volume group holds {format_size(capacity)} of extents, "
                    f"the logical volumes need {format_size(used - capacity)} more",
                    f"make partition '{pv.name}' at least "
                    f"{format_size(used + lvm.PE_START)} or the volume smaller",
                    g,
                    v,
                    "size",
                )

    def _check_boot(self, boot: set[Firmware]) -> None:
        disk, parts = self.disk, self.partitions
        esps = [i for i, p in enumerate(parts) if p.type == PartitionType.ESP]
        if len(esps) > 1:
            raise self.fail("the disk has two EFI system partitions", "keep one", esps[1], "type")
        uefi = {f for f in boot if f.is_uefi}
        if uefi and not esps:
            raise self.fail(
                "booting with UEFI needs an EFI system partition",
                "add {name: esp, type: esp, size: 127MiB, fs: vfat, mount: /boot/efi}",
            )
        if Firmware.BIOS in boot:
            if disk.sector_size != 512:
                raise self.fail(
                    "BIOS cannot boot from a disk with 4096-byte sectors",
                    "use sector_size: 512, or boot with uefi only",
                    key="sector_size",
                )
            if disk.table == PartitionTable.GPT and not any(
                p.type == PartitionType.BIOS_GRUB for p in parts
            ):
                raise self.fail(
                    "booting with BIOS from a GPT disk needs a bios-grub partition",
                    "add {name: bios, type: bios-grub, size: 1MiB}",
                )
        if Firmware.EXTLINUX in boot:
            self._check_extlinux()
        if disk.table == PartitionTable.MBR and len(parts) > 4:
            raise self.fail(
                "an MBR disk has at most 4 partitions", "use table: gpt", key="partitions"
            )
        if esps and uefi:
            esp = parts[esps[0]]
            if esp.size not in ("rest",) and not esp.size.endswith("%"):
                have = parse_size(esp.size)
                need = max(ESP_NEEDS[f] for f in uefi)
                if have < need:
                    raise self.fail(
                        f"partition '{esp.name}' ({format_size(have)}) is too small for the "
                        f"UEFI boot files: they need about {format_size(need)}, "
                        f"{format_size(need - have)} more",
                        f"make it at least {format_size(need)} (127MiB is usual)",
                        esps[0],
                        "size",
                    )

    def _check_extlinux(self) -> None:
        """U-Boot reads extlinux.conf and the kernel from a plain ext4 or vfat partition."""
        index = extlinux_partition(self.partitions)
        if index is None:
            raise self.fail(
                "U-Boot (boot: extlinux) reads the kernel from a partition, not from an "
                "LVM logical volume",
                "add a /boot partition: {name: boot, size: 512MiB, fs: ext4, mount: /boot}",
            )
        part = self.partitions[index]
        if part.fs not in (FsType.EXT4, FsType.VFAT):
            raise self.fail(
                f"partition '{part.name}' holds the kernel for U-Boot (boot: extlinux), "
                f"which reads ext4 and vfat, not {part.fs}",
                "use fs: ext4 for it, or add a /boot partition: {name: boot, size: 512MiB, "
                "fs: ext4, mount: /boot}",
                index,
                "fs",
            )

    def _check_sizes(self) -> None:
        disk, parts = self.disk, self.partitions
        try:
            alignment = parse_size(disk.alignment)
        except ValueError as exc:
            raise self.fail(str(exc), "e.g. alignment: 1MiB", key="alignment") from None
        if alignment % disk.sector_size or alignment & (alignment - 1):
            raise self.fail(
                f"the alignment {disk.alignment} is not a power of two multiple "
                f"of the {disk.sector_size}-byte sector",
                "use 1MiB (or 4MiB)",
                key="alignment",
            )
        percents = [i for i, p in enumerate(parts) if p.size.endswith("%")]
        if disk.size == "auto":
            if percents:
                raise self.fail(
                    f"partition '{parts[percents[0]].name}' is sized in percent, but the "
                    "disk size is auto",
                    "give the disk a size (disk: {size: 8GiB}) or the partition a fixed size",
                    percents[0],
                    "size",
                )
            return
        total = parse_size(disk.size)
        if total % alignment:
            raise self.fail(
                f"the disk size {disk.size} is not a multiple of the alignment ({disk.alignment})",
                f"round it to a multiple of {disk.alignment}",
                key="size",
            )
        used = alignment  # the partition table and the gap before the first partition
        for index, part in enumerate(parts):
            if part.size == "rest":
                continue
            size = (
                align_up(int(total * float(part.size[:-1]) / 100), alignment)
                if part.size.endswith("%")
                else align_up(parse_size(part.size), alignment)
            )
            used += size
            if used > total - alignment:
                over = used - (total - alignment)
                raise self.fail(
                    f"partition '{part.name}' ({format_size(size)}) does not fit on the "
                    f"{format_size(total)} disk: the partitions need {format_size(over)} "
                    "more than there is",
                    f"make the disk at least {format_size(total + over)} or the partition smaller",
                    index,
                    "size",
                )
