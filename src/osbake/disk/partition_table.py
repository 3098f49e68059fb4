"""Partition geometry and writing the table into the image file with sfdisk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osbake import run as runner
from osbake.disk.layout import DiskPlan, PartitionPlan
from osbake.disk.sizes import align_up
from osbake.events import Events
from osbake.recipe.model import PartitionTable

# What GPT keeps at the end of the disk: 128 entries of 128 bytes and a header.
GPT_TAIL_BYTES = 128 * 128 + 4096


@dataclass(frozen=True)
class Placed:
    """A partition with its final place on the disk (bytes)."""

    plan: PartitionPlan
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def place(disk: DiskPlan, sizes: dict[str, int], disk_size: int | None) -> tuple[list[Placed], int]:
    """Lay partitions out in order, aligned; return them and the disk size.

    `sizes` has the size of every partition except the one that takes the rest of
    a fixed-size disk. With an auto-sized disk every partition has a size.
    """
    alignment = disk.alignment
    position = alignment  # the table and the gap before the first partition
    placed: list[Placed] = []
    rest_index = next((i for i, p in enumerate(disk.partitions) if p.is_rest), None)
    fixed_after_rest = 0
    if disk_size is not None and rest_index is not None:
        fixed_after_rest = sum(
            align_up(sizes[p.name], alignment) for p in disk.partitions[rest_index + 1 :]
        )
    for index, partition in enumerate(disk.partitions):
        if partition.name in sizes:
            size = align_up(sizes[partition.name], alignment)
        else:
            assert disk_size is not None and index == rest_index
            end = disk_size - align_up(GPT_TAIL_BYTES, alignment) - fixed_after_rest
            size = end - position
        placed.append(Placed(partition, position, size))
        position += size
    total = disk_size if disk_size is not None else position + align_up(GPT_TAIL_BYTES, alignment)
    return placed, total


def sfdisk_script(disk: DiskPlan, placed: list[Placed]) -> str:
    sector = disk.sector_size
    lines = []
    if disk.table == PartitionTable.GPT:
        lines += ["label: gpt", f"label-id: {disk.disk_uuid.upper()}"]
    else:
        lines += ["label: dos", f"label-id: 0x{disk.disk_uuid.replace('-', '')[:8]}"]
    lines += ["unit: sectors", f"sector-size: {sector}", ""]
    mounts = {p.plan.mount: p.plan for p in placed if p.plan.mount}
    active = mounts.get("/boot") or mounts.get("/")
    for item in placed:
        fields = [
            f"start={item.start // sector}",
            f"size={item.size // sector}",
            f"type={item.plan.type_id}",
        ]
        if disk.table == PartitionTable.GPT:
            fields += [f"uuid={item.plan.part_uuid.upper()}", f'name="{item.plan.name}"']
            if item.plan.legacy_bootable:
                fields.append('attrs="LegacyBIOSBootable"')
        elif item.plan is active:
            fields.append("bootable")  # some BIOSes only boot a disk with an active partition
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def write_table(image: Path, disk: DiskPlan, placed: list[Placed], events: Events) -> None:
    runner.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never", str(image)],
        input=sfdisk_script(disk, placed).encode(),
        events=events,
    )
