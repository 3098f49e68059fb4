"""The server kernel's module families: what `kernel: server` leaves out and what it keeps.

families.list is the one list the element's scripts read; these tests hold it to the
element's defaults, to docs/baremetal.md and to the hardware a server keeps.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml

from osbake.elements.catalog import BUILTIN_DIR
from tests.unit.baremetal.test_variants import fixed_mirror, plan

__all__ = ["fixed_mirror"]  # autouse: the plans below need no mirror

ELEMENT = BUILTIN_DIR / "server-kernel"
DOCS = Path(__file__).parents[3] / "docs"

# Paths under /lib/modules/<version>/kernel/ that a server keeps (docs/baremetal.md).
KEPT = [
    "drivers/gpu/drm/ast/ast.ko",  # BMC graphics
    "drivers/gpu/drm/mgag200/mgag200.ko",
    "drivers/gpu/drm/tiny/bochs.ko",  # VM graphics
    "drivers/gpu/drm/virtio/virtio-gpu.ko",
    "drivers/gpu/drm/vmwgfx/vmwgfx.ko",
    "drivers/gpu/drm/drm.ko",
    "drivers/net/ethernet/mellanox/mlx5/core/mlx5_core.ko",  # ConnectX as Ethernet
    "drivers/net/ethernet/intel/ice/ice.ko",
    "drivers/scsi/lpfc/lpfc.ko",
    "drivers/nvme/host/nvme.ko",
    "drivers/md/dm-mod.ko",
    "fs/ext4/ext4.ko",
    "fs/xfs/xfs.ko",
    "fs/btrfs/btrfs.ko",
    "fs/ocfs2/ocfs2.ko",
    "fs/nfs/nfs.ko",
    "fs/exfat/exfat.ko",
    "drivers/hid/hid-generic.ko",  # keyboards and mice
    "drivers/hid/usbhid/usbhid.ko",
    "drivers/hid/hid-logitech-dj.ko",
    "drivers/hid/hid-apple.ko",
    "drivers/hwmon/coretemp.ko",
    "drivers/platform/x86/dell/dell-smbios.ko",  # servers' own platform drivers
    "drivers/platform/x86/intel/pmt/pmt_telemetry.ko",
    "arch/x86/kvm/kvm.ko",
]


def families() -> dict[str, list[str]]:
    table: dict[str, list[str]] = defaultdict(list)
    for line in (ELEMENT / "families.list").read_text().splitlines():
        if line.startswith("#") or not line.split():
            continue
        family, path = line.split()
        table[family].append(path)
    return dict(table)


def removes(paths: list[str], module: str) -> bool:
    """What the hook does: a folder removes everything below it, '!' keeps it again."""

    def under(path: str) -> bool:
        return module == path if path.endswith(".ko") else module.startswith(path + "/")

    dropped = any(under(p) for p in paths if not p.startswith("!"))
    return dropped and not any(under(p[1:]) for p in paths if p.startswith("!"))


def default_families() -> list[str]:
    spec = yaml.safe_load((ELEMENT / "element.yaml").read_text())
    return list(spec["options"]["families"]["default"])


def test_every_default_family_is_listed_and_every_listed_one_is_a_default() -> None:
    assert sorted(default_families()) == sorted(families())


def test_infiniband_foreign_file_systems_and_laptops_are_left_out() -> None:
    table = families()
    chosen = [path for family in default_families() for path in table[family]]
    for module in (
        "drivers/infiniband/core/ib_core.ko",
        "drivers/infiniband/hw/mlx5/mlx5_ib.ko",
        "fs/reiserfs/reiserfs.ko",
        "fs/f2fs/f2fs.ko",
        "fs/hfsplus/hfsplus.ko",
        "drivers/platform/x86/ideapad-laptop.ko",
        "drivers/platform/chrome/cros_ec.ko",
        "drivers/gpu/drm/udl/udl.ko",
        "drivers/hid/hid-sony.ko",
        "drivers/hid/wacom.ko",
        "drivers/gpu/drm/amd/amdgpu/amdgpu.ko",
        "sound/core/snd.ko",
    ):
        assert removes(chosen, module), module


def test_what_a_server_needs_stays() -> None:
    table = families()
    chosen = [path for family in default_families() for path in table[family]]
    for module in KEPT:
        assert not removes(chosen, module), module
    # The exceptions hold: DRM's display helpers need rc-core, Solarflare's sfc needs mtd.
    assert not removes(chosen, "drivers/media/rc/rc-core.ko")
    assert not removes(chosen, "drivers/mtd/mtd.ko")
    assert removes(chosen, "drivers/mtd/ubi/ubi.ko")


def test_keeping_infiniband_is_leaving_the_family_out_of_the_option() -> None:
    table = families()
    chosen = [p for f in default_families() if f != "infiniband" for p in table[f]]
    assert not removes(chosen, "drivers/infiniband/core/ib_core.ko")


def test_the_docs_list_every_family() -> None:
    text = (DOCS / "baremetal.md").read_text()
    for family in families():
        assert f"| `{family}` |" in text, family


def test_the_initramfs_gets_the_root_file_system_of_the_layout() -> None:
    assert plan("baremetal").environment["OSBAKE_ROOT_FS"] == "ext4"
    assert plan("server").environment["OSBAKE_ROOT_FS"] == "ext4"
