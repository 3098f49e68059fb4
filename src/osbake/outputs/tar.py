"""The root tree as a compressed tarball (for containers, chroots and WSL-style imports)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from osbake import run as runner
from osbake.outputs import Output
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context


class TarZst(Output):
    format = OutputFormat.TAR_ZST
    suffix = ".tar.zst"
    compressor = ["zstd", "-T0", "-q", "-6"]

    def write(self, ctx: Context) -> Path:
        dest = ctx.output_path(self.suffix)
        with dest.open("wb") as out:
            runner.run([*self.compressor, "-c", str(ctx.rootfs_tar)], stdout=out, events=ctx.events)
        return dest


class Tar(TarZst):
    """`tar` is the tarball in its default compression, zstd."""

    format = OutputFormat.TAR


class TarXz(TarZst):
    format = OutputFormat.TAR_XZ
    suffix = ".tar.xz"
    compressor = ["xz", "-T0", "-q", "-6"]
