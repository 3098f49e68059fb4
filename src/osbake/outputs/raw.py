"""The raw disk: byte for byte what goes on the disk (dd-able), kept sparse."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from osbake import run as runner
from osbake.outputs.disk_image import DiskOutput, verify
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context


class Raw(DiskOutput):
    format = OutputFormat.RAW
    suffix = ".raw"
    qemu_format = "raw"

    def write(self, ctx: Context) -> Path:
        assert ctx.disk is not None
        dest = ctx.output_path(self.suffix)
        # A reflink where the file system can, else a sparse copy: never the zeros.
        runner.run(
            ["cp", "--reflink=auto", "--sparse=always", str(ctx.disk.path), str(dest)],
            events=ctx.events,
        )
        verify(ctx, dest, "raw", ctx.disk.size)
        return dest
