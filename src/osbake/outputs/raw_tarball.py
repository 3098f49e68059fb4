"""The raw disk as disk.raw in a tarball, as cloud image drops ship it (GCE, Debian)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from osbake import run as runner
from osbake.errors import OutputError
from osbake.outputs.disk_image import DiskOutput
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context


class RawTarXz(DiskOutput):
    format = OutputFormat.RAW_TAR_XZ
    suffix = ".raw.tar.xz"
    qemu_format = "raw"
    # xz 5.4 compresses in blocks with any number of threads, even one (-T0): the same
    # bytes on any machine. pigz -n leaves the file's name and time out.
    compressor: ClassVar[str] = "xz -T0 -1"

    def write(self, ctx: Context) -> Path:
        assert ctx.disk is not None
        dest = ctx.output_path(self.suffix)
        # GNU sparse format: the holes of the disk are not stored (nor read back as data).
        # Holes are found by reading (raw), not asked of the host's file system, whose
        # allocation is its own; the member's time is the build's epoch, its mode fixed.
        runner.run(
            [
                "tar",
                "--create",
                f"--file={dest}",
                "--sparse",
                "--hole-detection=raw",
                "--format=gnu",
                f"--mtime=@{ctx.epoch}",
                "--mode=0644",
                f"--use-compress-program={self.compressor}",
                f"--directory={ctx.disk.path.parent}",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                ctx.disk.path.name,
            ],
            events=ctx.events,
        )
        listing = runner.output(["tar", "--list", f"--file={dest}"])
        if listing.split() != [ctx.disk.path.name]:
            raise OutputError(f"unexpected members in {dest.name}: {listing}")
        return dest


class RawTarGz(RawTarXz):
    format = OutputFormat.RAW_TAR_GZ
    suffix = ".raw.tar.gz"
    compressor = "pigz -n"
