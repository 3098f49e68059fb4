"""VHD, fixed, of a whole number of MiB: the format Azure requires."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from osbake.disk.sizes import MiB
from osbake.errors import OutputError
from osbake.outputs import pinning
from osbake.outputs.disk_image import DiskOutput, derived_id
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context


class Vhd(DiskOutput):
    format = OutputFormat.VHD
    suffix = ".vhd"
    qemu_format = "vpc"
    # force_size keeps the exact size instead of VHD's CHS rounding.
    options = ["subformat=fixed", "force_size=on"]

    def write(self, ctx: Context) -> Path:
        assert ctx.disk is not None
        if ctx.disk.size % MiB:
            raise OutputError(
                f"a VHD for Azure must be a whole number of MiB; the disk is {ctx.disk.size} bytes",
                hint="use disk alignment of 1MiB",
            )
        return super().write(ctx)

    def pin(self, ctx: Context, path: Path) -> None:
        pinning.pin_vhd(path, epoch=ctx.epoch, disk_id=derived_id(ctx, "vhd", "uuid"))
