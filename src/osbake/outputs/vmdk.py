"""VMDK, streamOptimized: what VMware ESXi/vSphere and VirtualBox import."""

from __future__ import annotations

from osbake.outputs.disk_image import DiskOutput
from osbake.recipe import OutputFormat


class Vmdk(DiskOutput):
    format = OutputFormat.VMDK
    suffix = ".vmdk"
    qemu_format = "vmdk"
    options = ["subformat=streamOptimized"]
