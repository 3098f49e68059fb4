"""Disk layouts: where they come from, the checks before any work, and identifiers.

A layout comes from the recipe's `disk:`, else from the last element (in
dependency order) that supplies a default. Element defaults adapt to `boot:` (an
ESP only with UEFI, a bios-grub partition only with BIOS); a recipe's layout is
taken as written and checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from osbake.arch import Arch
from osbake.disk.sizes import MiB, align_up, format_size, parse_size
from osbake.errors import Location, RecipeError
from osbake.recipe import Firmware, Recipe, locate
from osbake.recipe.model import Disk, FsType, Partition, PartitionTable, PartitionType

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
}
MBR_TYPES = {
    PartitionType.ESP: "ef",
    PartitionType.SWAP: "82",
}
MBR_LINUX = "83"

# Room the boot files need on the ESP (with FAT's own overhead), by firmware.
ESP_NEEDS = {Firmware.UEFI: 6 * MiB, Firmware.UEFI_SECUREBOOT: 10 * MiB}
SUPPORTED_FS = (FsType.EXT4, FsType.VFAT, FsType.BTRFS, FsType.SWAP)


@dataclass(frozen=True)
class PartitionPlan:
    """One partition as it will be made, before its size is final."""

    number: int
    name: str
    type: PartitionType
    size: str  # as written: 127MiB, 25%, rest
    fs: FsType | None
    mount: str | None
    label: str | None
    options: str | None
    part_uuid: str
    fs_uuid: str
    type_id: str  # GPT type GUID, or MBR type byte (hex)

    @property
    def is_rest(self) -> bool:
        return self.size == "rest"

    @property
    def percent(self) -> float | None:
        return float(self.size[:-1]) if self.size.endswith("%") else None

    @property
    def fixed_bytes(self) -> int | None:
        if self.is_rest or self.percent is not None:
            return None
        return parse_size(self.size)


@dataclass(frozen=True)
class DiskPlan:
    table: PartitionTable
    sector_size: int
    alignment: int
    size: int | None  # None: auto
    free: int
    disk_uuid: str
    partitions: list[PartitionPlan] = field(default_factory=list)

    @property
    def root(self) -> PartitionPlan:
        for partition in self.partitions:
            if partition.mount == "/":
                return partition
        raise LookupError("no root partition")

    def by_mount(self) -> list[PartitionPlan]:
        """Partitions with a file system mounted somewhere, shallowest mount first."""
        mounted = [p for p in self.partitions if p.mount and p.fs and p.fs != FsType.SWAP]
        return sorted(mounted, key=lambda p: (p.mount or "").count("/") if p.mount != "/" else 0)


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
    )


def _default_label(partition: Partition) -> str | None:
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
            if part.type == PartitionType.ESP and part.mount not in (None, "/boot/efi"):
                raise self.fail(
                    f"the EFI system partition '{part.name}' is mounted on {part.mount}: "
                    "GRUB and shim are installed under /boot/efi",
                    "use mount: /boot/efi",
                    index,
                    "mount",
                )
        if "/" not in mounts:
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
