"""What a disk layout plans: partitions, logical volumes and LUKS containers, before
their sizes are final. osbake.disk.layout makes and checks these from the recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from osbake.disk import lvm
from osbake.disk.sizes import MiB, parse_size
from osbake.recipe import files
from osbake.recipe.model import FsType, LuksUnlock, PartitionTable, PartitionType

# cryptsetup's default LUKS2 header (16 MiB) and as much again for its reencryption
# (`--reduce-device-size 32M`): the file system of an encrypted partition is this smaller.
LUKS_OVERHEAD = 32 * MiB
LUKS_KEY_LIMIT = 8192  # cryptsetup reads at most 8 KiB of a key file by default


@dataclass(frozen=True)
class LuksPlan:
    """A LUKS2 container around a partition's or a logical volume's file system."""

    name: str  # the device-mapper name: /dev/mapper/<name>
    uuid: str  # the LUKS header's UUID (crypttab names the container by it)
    unlock: LuksUnlock
    key_file: str  # relative to key_folder, read with osbake.recipe.files
    key_folder: str
    key_sha256: str  # so a new key makes a new disk

    def read_key(self) -> bytes:
        """The key, read again from the recipe's folder (never kept in the plan or cache)."""
        return files.read_source(Path(self.key_folder), self.key_file, LUKS_KEY_LIMIT)


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
    type_id: str  # GPT type GUID, or MBR type byte (hex); "lvm" for a logical volume
    volume_group: str | None = None  # set for a logical volume: the group it is in
    luks: LuksPlan | None = None
    # GPT's LegacyBIOSBootable attribute: U-Boot's distro boot looks for extlinux.conf
    # on the partitions that have it (and an ESP), else on the first partition only.
    legacy_bootable: bool = False

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
class VolumeGroupPlan:
    """An LVM volume group on one partition, and its logical volumes in disk order."""

    name: str
    id: str  # LVM's 32-character id
    pv: str  # the partition that is its physical volume
    pv_id: str
    extent_size: int
    volumes: list[PartitionPlan] = field(default_factory=list)

    def device(self, volume: PartitionPlan) -> str:
        return f"/dev/mapper/{lvm.mapper_name(self.name, volume.name)}"


@dataclass(frozen=True)
class DiskPlan:
    table: PartitionTable
    sector_size: int
    alignment: int
    size: int | None  # None: auto
    free: int
    disk_uuid: str
    partitions: list[PartitionPlan] = field(default_factory=list)
    volume_groups: list[VolumeGroupPlan] = field(default_factory=list)

    @property
    def volumes(self) -> list[PartitionPlan]:
        """Every logical volume of every volume group."""
        return [v for group in self.volume_groups for v in group.volumes]

    @property
    def filesystems(self) -> list[PartitionPlan]:
        """Partitions, then logical volumes: everything that may hold a file system."""
        return [*self.partitions, *self.volumes]

    @property
    def encrypted(self) -> list[PartitionPlan]:
        """The partitions and logical volumes in LUKS containers."""
        return [p for p in self.filesystems if p.luks is not None]

    def group(self, name: str) -> VolumeGroupPlan:
        return next(g for g in self.volume_groups if g.name == name)

    def device(self, part: PartitionPlan) -> str | None:
        """/dev/mapper/VG-LV for a logical volume, /dev/mapper/NAME for an encrypted
        partition or logical volume; None for a plain partition."""
        if part.luks is not None:
            return f"/dev/mapper/{part.luks.name}"
        if part.volume_group is None:
            return None
        return self.group(part.volume_group).device(part)

    @property
    def root(self) -> PartitionPlan:
        for partition in self.filesystems:
            if partition.mount == "/":
                return partition
        raise LookupError("no root partition")

    def by_mount(self) -> list[PartitionPlan]:
        """Partitions and volumes with a file system mounted somewhere, shallowest first."""
        mounted = [p for p in self.filesystems if p.mount and p.fs and p.fs != FsType.SWAP]
        return sorted(mounted, key=lambda p: (p.mount or "").count("/") if p.mount != "/" else 0)
