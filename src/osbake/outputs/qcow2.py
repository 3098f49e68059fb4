"""qcow2, compressed (clouds import it as is: OpenStack, libvirt, Proxmox)."""

from __future__ import annotations

from osbake.outputs.disk_image import DiskOutput, cores
from osbake.recipe import OutputFormat


class Qcow2(DiskOutput):
    format = OutputFormat.QCOW2
    suffix = ".qcow2"
    qemu_format = "qcow2"

    def convert_args(self) -> list[str]:
        # -c compresses each cluster; -W with several coroutines lets qemu-img compress
        # clusters on all cores at once.
        return ["-c", "-W", "-m", str(min(16, max(2, cores() * 2)))]
