"""qcow2, compressed (clouds import it as is: OpenStack, libvirt, Proxmox)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from osbake.outputs.disk_image import DiskOutput, cores
from osbake.recipe import OutputFormat


class Qcow2Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compression: Literal["zstd", "zlib", "none"] = Field(
        "zstd",
        description="zstd is several times faster to write and read than zlib and needs "
        "QEMU 5.1 or newer to read (2020); zlib is read by any qcow2 reader",
    )


class Qcow2(DiskOutput):
    format = OutputFormat.QCOW2
    suffix = ".qcow2"
    qemu_format = "qcow2"
    settings_model = Qcow2Settings

    def convert_args(self) -> list[str]:
        compression = self.settings.get("compression", "zstd")
        if compression == "none":
            return []
        # -c compresses each cluster, on all cores at once with several coroutines. Not
        # -W (out-of-order writes): clusters would land in the file in the order their
        # compression ends, and two conversions of one disk would differ.
        args = ["-c", "-m", str(min(16, max(2, cores() * 2)))]
        return [*args, "-o", f"compression_type={compression}"]
