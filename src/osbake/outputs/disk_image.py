"""Shared by the disk outputs: convert the assembled raw disk with qemu-img, then check it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from osbake import run as runner
from osbake.errors import OutputError
from osbake.outputs import Output

if TYPE_CHECKING:
    from osbake.context import Context

# qemu-img check knows these formats; for the others `info` must agree on format and size.
CHECKABLE = ("qcow2", "vhdx", "vmdk")


def qemu_info(path: Path, fmt: str | None = None) -> dict[str, object]:
    argv = ["qemu-img", "info", "--output=json"]
    if fmt:
        argv += ["-f", fmt]
    data: dict[str, object] = json.loads(runner.output([*argv, str(path)]))
    return data


def verify(ctx: Context, path: Path, qemu_format: str, virtual_size: int) -> None:
    """Every disk output passes qemu-img check (where it applies) and info."""
    if qemu_format in CHECKABLE:
        runner.run(
            ["qemu-img", "check", "-f", qemu_format, str(path)],
            events=ctx.events,
            hint="the written image is damaged; this is a bug in osbake",
        )
    info = qemu_info(path, qemu_format)
    if info.get("format") != qemu_format or info.get("virtual-size") != virtual_size:
        raise OutputError(
            f"{path.name}: qemu-img reads it as {info.get('format')} of "
            f"{info.get('virtual-size')} bytes, expected {qemu_format} of {virtual_size}"
        )


class DiskOutput(Output):
    """A disk image made by `qemu-img convert` from the raw disk."""

    needs_disk = True
    qemu_format: ClassVar[str]
    options: ClassVar[list[str]] = []

    def convert_args(self) -> list[str]:
        return []

    def pin(self, ctx: Context, path: Path) -> None:
        """Overwrite what qemu-img wrote at random or from the clock (osbake.outputs.pinning)."""

    def write(self, ctx: Context) -> Path:
        assert ctx.disk is not None
        dest = ctx.output_path(self.suffix)
        argv = ["qemu-img", "convert", "-f", "raw", "-O", self.qemu_format, *self.convert_args()]
        if self.options:
            argv += ["-o", ",".join(self.options)]
        runner.run([*argv, str(ctx.disk.path), str(dest)], events=ctx.events)
        self.pin(ctx, dest)
        verify(ctx, dest, self.qemu_format, ctx.disk.size)
        return dest


def derived_id(ctx: Context, fmt: str, purpose: str) -> uuid.UUID:
    """An identifier of a disk output derived from the disk's (itself from the recipe)."""
    assert ctx.plan.disk is not None
    return uuid.uuid5(uuid.UUID(ctx.plan.disk.disk_uuid), f"{fmt}/{purpose}")


def cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))
