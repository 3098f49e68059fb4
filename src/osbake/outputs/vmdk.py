"""VMDK, streamOptimized: what VMware ESXi/vSphere and VirtualBox import."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from osbake.outputs import pinning
from osbake.outputs.disk_image import DiskOutput, derived_id
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context


class Vmdk(DiskOutput):
    format = OutputFormat.VMDK
    suffix = ".vmdk"
    qemu_format = "vmdk"
    options = ["subformat=streamOptimized"]

    def pin(self, ctx: Context, path: Path) -> None:
        # The descriptor names the file qemu-img wrote: the final name, not the partial's.
        final = ctx.partials.get(path, path)
        cid = int.from_bytes(derived_id(ctx, "vmdk", "cid").bytes[:4], "big")
        pinning.pin_vmdk(path, cid=cid, extent_name=final.name)
