"""VHDX, dynamic: Hyper-V's own format."""

from __future__ import annotations

from osbake.outputs.disk_image import DiskOutput
from osbake.recipe import OutputFormat


class Vhdx(DiskOutput):
    format = OutputFormat.VHDX
    suffix = ".vhdx"
    qemu_format = "vhdx"
    options = ["subformat=dynamic"]
