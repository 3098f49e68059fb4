"""VHDX, dynamic: Hyper-V's own format."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from osbake.outputs import pinning
from osbake.outputs.disk_image import DiskOutput, derived_id
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context


class Vhdx(DiskOutput):
    format = OutputFormat.VHDX
    suffix = ".vhdx"
    qemu_format = "vhdx"
    options = ["subformat=dynamic"]

    def pin(self, ctx: Context, path: Path) -> None:
        ids = {purpose: derived_id(ctx, "vhdx", purpose) for purpose in pinning.VHDX_IDS}
        pinning.pin_vhdx(path, ids=ids)
