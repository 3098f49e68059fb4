"""First-boot seeds: NoCloud and OpenStack ConfigDrive volumes cloud-init reads offline.

from osbake.firstboot import make_seed, SeedFormat
make_seed(Path("seed.iso"), format=SeedFormat.CONFIGDRIVE,
          user_data=Path("user-data.yaml"), hostname="web1",
          ssh_keys=[Path("~/.ssh/id_ed25519.pub").expanduser()], user="ops")
"""

from osbake.firstboot.seed import (
    CONFIGDRIVE_VERSION,
    SeedContent,
    SeedFormat,
    seed_content,
)
from osbake.firstboot.volume import make_seed, probe_volume, read_volume, write_volume

__all__ = [
    "CONFIGDRIVE_VERSION",
    "SeedContent",
    "SeedFormat",
    "make_seed",
    "probe_volume",
    "read_volume",
    "seed_content",
    "write_volume",
]
