"""GRUB for BIOS and UEFI (and shim for Secure Boot), installed into the image file.

Everything GRUB runs comes from the image's own packages: core images are made
with the image's grub-mkimage inside the tree, the signed shim and GRUB are the
image's files. GRUB's own device probing is not used (it falls back to loop
device names on a build host); osbake writes root=UUID=, the search by UUID and
fstab itself.

BIOS: the core image (with every module it needs built in) goes into the
bios-grub partition on GPT, or the gap before the first partition on MBR, and the
image's boot.img goes into the MBR, pointed at it, the way grub-bios-setup does.
UEFI: EFI/BOOT/BOOT<ARCH>.EFI on the ESP (the removable path, so no NVRAM entry is
needed): a GRUB image, or with Secure Boot Debian's signed shim, which loads the
signed GRUB next to it. Platforms and file names come from osbake.arch.
extlinux (ARM boards): no GRUB; /boot/extlinux/extlinux.conf for U-Boot's distro boot.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from osbake import binfmt, sandbox
from osbake import run as runner
from osbake.arch import ArchInfo
from osbake.disk.filesystems import vfat_fstab_id
from osbake.disk.layout import DiskPlan, PartitionPlan
from osbake.disk.partition_table import Placed
from osbake.distros import kernels
from osbake.errors import OsbakeError
from osbake.recipe import Firmware
from osbake.recipe.model import FsType, LuksUnlock, PartitionTable, PartitionType

if TYPE_CHECKING:
    from osbake.context import Context

# boot.img fields (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h).
KERNEL_SECTOR = 0x5C
DRIVE_CHECK = 0x66
NT_MAGIC = 0x1B8
PART_END = 0x1FE
# The first blocklist sits at the end of the core image's first sector (diskboot.S).
BLOCKLIST = 512 - 12
KERNEL_SEGMENT = 0x800 + (512 >> 4)

MODULES = [
    "part_gpt",
    "part_msdos",
    "ext2",
    "btrfs",
    "fat",
    "search",
    "search_fs_uuid",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "gzio",
    "xzio",
    "zstd",
    "sleep",
    "ls",
    "cat",
    "reboot",
    "halt",
    "all_video",
    "loadenv",
    "minicmd",
    "true",
]
BIOS_MODULES = ["biosdisk"]
EFI_MODULES = ["efi_gop"]


class BootloaderError(OsbakeError):
    """The bootloader could not be installed."""


@dataclass
class BootSetup:
    """What the block-device step prepared, for the disk step to finish."""

    core_img: Path | None = None
    boot_img: Path | None = None
    firmware: list[str] = field(default_factory=list)
    cmdline: str = ""
    efi_files: list[str] = field(default_factory=list)


# How long systemd waits for the device of a mount, and for the mount itself, before
# it gives up (its default, 90 s each, is not enough for an emulated machine on a
# loaded host: udev and fsck run many times slower under TCG).
SLOW_DEVICE_SECONDS = 300
# Mount points the system cannot run without: if one is missing, booting on would
# write into the root file system what belongs on it. Everything else is `nofail`:
# the boot goes on without it, and a late device does not stop the machine.
ESSENTIAL_MOUNTS = ("/", "/usr", "/var", "/boot")


def is_essential(mount: str) -> bool:
    return mount in ESSENTIAL_MOUNTS or mount.startswith(("/usr/", "/var/"))


def _slow_hardware_options(options: str, mount: str | None, user_given: bool) -> str:
    """Add a device and mount timeout, and `nofail` where a mount may be missing."""
    words = options.split(",") if options else []
    if mount != "/":
        if not any(w.startswith("x-systemd.device-timeout=") for w in words):
            words.append(f"x-systemd.device-timeout={SLOW_DEVICE_SECONDS}s")
        if mount is not None and not any(w.startswith("x-systemd.mount-timeout=") for w in words):
            words.append(f"x-systemd.mount-timeout={SLOW_DEVICE_SECONDS}s")
        # The recipe's own options say what it wants; osbake adds nofail only to its own.
        if (mount is None or not is_essential(mount)) and not user_given and "nofail" not in words:
            words.append("nofail")
    return ",".join(words)


def fstab(disk: DiskPlan) -> str:
    lines = ["# /etc/fstab: written by osbake from the image's disk layout (by UUID)."]
    for part in disk.by_mount():
        assert part.fs is not None and part.mount is not None
        if part.fs == FsType.VFAT:
            ident = f"UUID={vfat_fstab_id(part.fs_uuid)}"
            options = part.options or "umask=0077"
            passno = 2
        else:
            ident = f"UUID={part.fs_uuid}"
            options = part.options or (
                "errors=remount-ro" if part.fs == FsType.EXT4 else "defaults"
            )
            passno = 1 if part.mount == "/" else 2
            if part.fs == FsType.BTRFS:
                passno = 0
        options = _slow_hardware_options(options, part.mount, part.options is not None)
        lines.append(f"{ident}\t{part.mount}\t{part.fs}\t{options}\t0\t{passno}")
    for part in disk.filesystems:
        if part.fs == FsType.SWAP:
            options = _slow_hardware_options("sw", None, False)
            lines.append(f"UUID={part.fs_uuid}\tnone\tswap\t{options}\t0\t0")
    return "\n".join(lines) + "\n"


def grub_cfg_head(comment: str, serial: bool) -> list[str]:
    """The lines every grub.cfg osbake writes starts with: no menu wait (an image boots
    unattended; hold Shift or Esc for the menu), and the serial console when asked."""
    lines = [*comment.splitlines(), "set default=0", "set timeout_style=hidden", "set timeout=0"]
    if serial:
        lines += [
            "serial --unit=0 --speed=115200",
            "terminal_input console serial",
            "terminal_output console serial",
        ]
    return lines


def grub_quoted(text: str) -> str:
    """Text for inside single quotes in grub.cfg (a quote ends and reopens them)."""
    return text.replace("'", "'\\''")


def boot_partition(disk: DiskPlan) -> PartitionPlan:
    """The partition (or logical volume) whose file system holds /boot."""
    for part in disk.filesystems:
        if part.mount == "/boot":
            return part
    return disk.root


def grub_cfg(
    disk: DiskPlan,
    kernel: str,
    initrd: str | None,
    cmdline: str,
    serial: bool,
    title: str = "Linux",
) -> str:
    boot = boot_partition(disk)
    lines = grub_cfg_head(
        "# Written by osbake. Kernel upgrades keep working: /vmlinuz and /initrd.img\n"
        "# are symlinks the kernel packages update.",
        serial,
    )
    lines += [
        f"menuentry '{grub_quoted(title)}' --id osbake {{",
        f"\tsearch --no-floppy --fs-uuid --set=root {boot.fs_uuid}",
        "\techo 'Loading Linux ...'",
        f"\tlinux {kernel} root={root_device(disk)} ro {cmdline}".rstrip(),
    ]
    if initrd:
        lines.append(f"\tinitrd {initrd}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def root_device(disk: DiskPlan) -> str:
    """The kernel's root=: the file system's UUID, or /dev/mapper/VG-LV on LVM.

    Debian's lvm2 initramfs script activates the logical volume root= names (it
    reads the group and volume from a /dev/mapper name); with root=UUID= it would
    not know which volume to activate.
    """
    return disk.device(disk.root) or f"UUID={disk.root.fs_uuid}"


def grub_modules(disk: DiskPlan, wanted: list[str]) -> list[str]:
    """GRUB's modules for this disk: `lvm` too when /boot is on a logical volume."""
    return [*wanted, "lvm"] if boot_partition(disk).volume_group else wanted


def early_cfg(disk: DiskPlan) -> str:
    """Built into GRUB images: find the /boot file system by UUID, read its grub.cfg."""
    boot = boot_partition(disk)
    prefix = "/grub" if boot.mount == "/boot" else "/boot/grub"
    return (
        f"search --no-floppy --fs-uuid --set=root {boot.fs_uuid}\n"
        f"set prefix=($root){prefix}\n"
        "configfile $prefix/grub.cfg\n"
    )


def extlinux_conf(
    disk: DiskPlan, kernel: str, initrd: str | None, cmdline: str, title: str = "Linux"
) -> str:
    """U-Boot's distro boot menu (the syslinux format U-Boot's pxe/sysboot reads)."""
    lines = [
        "# Written by osbake: U-Boot's distro boot reads this file from the first",
        "# partition (or the one marked bootable) of each disk it scans.",
        "default osbake",
        "menu title " + title,
        "timeout 1",
        "",
        "label osbake",
        f"\tmenu label {title}",
        f"\tlinux {kernel}",
    ]
    if initrd:
        lines.append(f"\tinitrd {initrd}")
    # The same root= as GRUB's: a root on LVM or in a LUKS container is a /dev/mapper name.
    lines.append(f"\tappend root={root_device(disk)} ro {cmdline}".rstrip())
    return "\n".join(lines) + "\n"


def versioned_kernel_paths(ctx: Context, disk: DiskPlan) -> tuple[str, str | None]:
    """The kernel's and initrd's own files (not the /vmlinuz links) on the /boot file system."""
    version = kernels.booted_release(ctx.tree)
    if version is None:
        raise BootloaderError(
            "the image has no kernel in /boot, so it cannot boot",
            hint="set 'kernel:' in the recipe (cloud, generic, or a package name)",
        )
    prefix = "" if boot_partition(disk).mount == "/boot" else "/boot"
    initrd = ctx.tree / "boot" / f"initrd.img-{version}"
    return (
        f"{prefix}/vmlinuz-{version}",
        f"{prefix}/initrd.img-{version}" if initrd.exists() else None,
    )


def kernel_paths(ctx: Context, disk: DiskPlan) -> tuple[str, str | None]:
    """Paths of the kernel and initrd as GRUB sees them on the /boot file system."""
    tree = ctx.tree
    separate_boot = boot_partition(disk).mount == "/boot"
    if not separate_boot and (tree / "vmlinuz").is_symlink():
        initrd = "/initrd.img" if (tree / "initrd.img").is_symlink() else None
        return "/vmlinuz", initrd
    version = kernels.booted_release(tree)  # /vmlinuz's target, else the newest version
    if version is None:
        raise BootloaderError(
            "the image has no kernel in /boot, so it cannot boot",
            hint="set 'kernel:' in the recipe (cloud, generic, or a package name)",
        )
    prefix = "" if separate_boot else "/boot"
    initrd_path = tree / "boot" / f"initrd.img-{version}"
    return (
        f"{prefix}/vmlinuz-{version}",
        f"{prefix}/initrd.img-{version}" if initrd_path.exists() else None,
    )


def prepare(ctx: Context, disk: DiskPlan, firmware: list[Firmware], cmdline: str) -> BootSetup:
    """Write fstab and GRUB's configuration, and make the boot files, in the tree."""
    stage = ctx.workdir / "boot"
    stage.mkdir(parents=True, exist_ok=True)
    setup = BootSetup(firmware=[str(f) for f in firmware], cmdline=cmdline)
    host_image: list[str] = []  # the host's grub-mkimage arguments, if it makes the EFI image
    (stage / "fstab").write_text(fstab(disk))
    commands = ["install -m 0644 /run/osbake/boot/fstab /etc/fstab"]
    keys = _stage_luks(disk, stage, commands)
    info = ctx.plan.arch.info
    if Firmware.EXTLINUX in firmware:
        kernel, initrd = versioned_kernel_paths(ctx, disk)
        (stage / "extlinux.conf").write_text(
            extlinux_conf(disk, kernel, initrd, cmdline, ctx.distro.menu_title)
        )
        commands += [
            "mkdir -p /boot/extlinux",
            "install -m 0644 /run/osbake/boot/extlinux.conf /boot/extlinux/extlinux.conf",
        ]
    if [f for f in firmware if f != Firmware.EXTLINUX]:
        kernel, initrd = kernel_paths(ctx, disk)
        serial = f"console={info.console}" in cmdline
        (stage / "grub.cfg").write_text(
            grub_cfg(disk, kernel, initrd, cmdline, serial, ctx.distro.menu_title)
        )
        (stage / "early.cfg").write_text(early_cfg(disk))
        commands += [
            "mkdir -p /boot/grub",
            "install -m 0644 /run/osbake/boot/grub.cfg /boot/grub/grub.cfg",
        ]
    if Firmware.BIOS in firmware:
        platform = _platform(info, Firmware.BIOS)
        modules = _available(ctx, info, Firmware.BIOS, grub_modules(disk, MODULES + BIOS_MODULES))
        commands.append(
            f"grub-mkimage -O {platform} -o /run/osbake/boot/core.img -p /boot/grub "
            f"-c /run/osbake/boot/early.cfg {' '.join(modules)}"
        )
        commands.append(f"cp /usr/lib/grub/{platform}/boot.img /run/osbake/boot/boot.img")
        setup.core_img = stage / "core.img"
        setup.boot_img = stage / "boot.img"
    uefi = [f for f in firmware if f.is_uefi]
    if uefi:
        platform = _platform(info, uefi[0])
        loader, lower = info.efi_loader, info.efi_suffix
        efi = "/boot/efi/EFI"
        commands += [f"mkdir -p {efi}/BOOT {efi}/{ctx.distro.efi_dir}"]
        if Firmware.UEFI_SECUREBOOT in uefi:
            if not info.secure_boot:
                raise BootloaderError(f"{info.debian} has no signed shim and GRUB for Secure Boot")
            # Debian's signed shim loads the signed GRUB beside it; that GRUB reads
            # its configuration from /EFI/debian (its built-in prefix).
            for source, name in (
                (f"/usr/lib/shim/shim{lower}.efi.signed", loader),
                (f"/usr/lib/grub/{platform}-signed/grub{lower}.efi.signed", f"grub{lower}.efi"),
                (f"/usr/lib/shim/mm{lower}.efi.signed", f"mm{lower}.efi"),
            ):
                _require(ctx, source, " and ".join(info.secure_boot_packages()))
                commands.append(f"install -m 0644 {source} {efi}/BOOT/{name}")
                setup.efi_files.append(f"EFI/BOOT/{name}")
            for folder in ("BOOT", ctx.distro.efi_dir):
                commands.append(
                    f"install -m 0644 /run/osbake/boot/early.cfg {efi}/{folder}/grub.cfg"
                )
        else:
            modules = _available(ctx, info, uefi[0], grub_modules(disk, MODULES + EFI_MODULES))
            options = f"-O {platform} -p /EFI/BOOT {' '.join(modules)}"
            if _host_grub_fits(ctx, platform):
                # A foreign image's grub-mkimage would run emulated: the host's (the same
                # GRUB release) packs the image's own modules instead.
                host_image = ["-d", str(ctx.tree / "usr/lib/grub" / platform)]
                host_image += ["-o", str(ctx.tree / f"boot/efi/EFI/BOOT/{loader}")]
                host_image += ["-c", str(stage / "early.cfg"), *options.split()]
            else:
                commands.append(
                    f"grub-mkimage -o {efi}/BOOT/{loader} -c /run/osbake/boot/early.cfg {options}"
                )
            setup.efi_files.append(f"EFI/BOOT/{loader}")
    sandbox.run_in_tree(
        ctx.tree,
        ["sh", "-ec", "; ".join(commands)],
        events=ctx.events,
        binds=[sandbox.Bind(stage, "/run/osbake/boot", writable=True)],
        network=False,
        hint="the image's GRUB tools failed; run with -v for their output",
    )
    if host_image:
        runner.run(["grub-mkimage", *host_image], events=ctx.events)
    for key in keys:
        key.unlink()
    return setup


GRUB_VERSION = re.compile(r'^grub_package_version="([^"]+)"$', re.MULTILINE)


def _host_grub_fits(ctx: Context, platform: str) -> bool:
    """Whether the host's grub-mkimage should pack the image's GRUB modules: only for
    an image whose programs run emulated, and only with the very same GRUB version."""
    if not binfmt.needs_emulation(ctx.plan.arch, binfmt.host_arch()):
        return False
    if not runner.exists("grub-mkimage"):
        return False
    modinfo = ctx.tree / "usr/lib/grub" / platform / "modinfo.sh"
    found = GRUB_VERSION.search(modinfo.read_text()) if modinfo.is_file() else None
    if found is None:
        return False
    host = runner.output(["grub-mkimage", "--version"]).split()
    return bool(host) and host[-1] == found.group(1)


KEYS_DIR = "/etc/cryptsetup-keys.d"
CONF_HOOK = f"""\
# Written by osbake: unlock the encrypted file systems of /etc/crypttab in the initramfs.
CRYPTSETUP=y
KEYFILE_PATTERN="{KEYS_DIR}/*.key"
"""


def crypttab(disk: DiskPlan) -> str:
    """Every LUKS container, by its UUID; `initramfs`, so the initramfs unlocks it."""
    lines = ["# /etc/crypttab: written by osbake from the image's disk layout."]
    for part in disk.encrypted:
        assert part.luks is not None
        key = (
            f"{KEYS_DIR}/{part.luks.name}.key"
            if part.luks.unlock == LuksUnlock.INITRAMFS
            else "none"
        )
        lines.append(f"{part.luks.name}\tUUID={part.luks.uuid}\t{key}\tluks,discard,initramfs")
    return "\n".join(lines) + "\n"


def _stage_luks(disk: DiskPlan, stage: Path, commands: list[str]) -> list[Path]:
    """crypttab, the keys to put in the initramfs, and a new initramfs that unlocks them.

    The initramfs was made at the end of `install`, before the layout's crypttab
    existed: it is made again here. A key in the initramfs (unlock: initramfs) is no
    secret: anyone with the image can read it. It lets a cloud image boot unattended.
    """
    encrypted = disk.encrypted
    if not encrypted:
        return []
    (stage / "crypttab").write_text(crypttab(disk))
    (stage / "conf-hook").write_text(CONF_HOOK)
    commands += [
        "install -m 0644 /run/osbake/boot/crypttab /etc/crypttab",
        "mkdir -p /etc/cryptsetup-initramfs /etc/initramfs-tools/conf.d",
        "install -m 0644 /run/osbake/boot/conf-hook /etc/cryptsetup-initramfs/conf-hook",
        # The initramfs holds keys: readable by root only.
        "echo UMASK=0077 > /etc/initramfs-tools/conf.d/osbake-luks",
        f"install -d -m 0700 {KEYS_DIR}",
    ]
    keys = []
    for part in encrypted:
        assert part.luks is not None
        if part.luks.unlock != LuksUnlock.INITRAMFS:
            continue
        key = stage / f"{part.luks.name}.key"
        key.touch(mode=0o600)
        key.write_bytes(part.luks.read_key())
        keys.append(key)
        commands.append(
            f"install -m 0400 /run/osbake/boot/{key.name} {KEYS_DIR}/{part.luks.name}.key"
        )
    commands.append("update-initramfs -u -k all")
    return keys


def _platform(info: ArchInfo, firmware: Firmware) -> str:
    """GRUB's platform for the firmware (the recipe's check refuses those an arch lacks)."""
    platform = info.grub_platform(firmware)
    if platform is None:
        raise BootloaderError(
            f"{info.debian} does not boot with {firmware}",
            hint=f"{info.debian} boots with: {info.boot_summary()}",
        )
    return platform


def _available(ctx: Context, info: ArchInfo, firmware: Firmware, wanted: list[str]) -> list[str]:
    platform = _platform(info, firmware)
    folder = ctx.tree / "usr" / "lib" / "grub" / platform
    if not folder.is_dir():
        raise BootloaderError(
            f"the image has no GRUB for {platform} (/usr/lib/grub/{platform})",
            hint=f"install {info.grub_package(firmware)} in the image (the vm element does)",
        )
    return [m for m in wanted if (folder / f"{m}.mod").exists()]


def _require(ctx: Context, path: str, packages: str) -> None:
    if not (ctx.tree / path.lstrip("/")).exists():
        raise BootloaderError(
            f"the image has no {path}", hint=f"Secure Boot needs Debian's {packages} in the image"
        )


def install_bios(image: Path, disk: DiskPlan, placed: list[Placed], setup: BootSetup) -> None:
    """Write GRUB's boot sector and core image into the image file (as grub-bios-setup)."""
    assert setup.core_img is not None and setup.boot_img is not None
    core = bytearray(setup.core_img.read_bytes())
    boot = bytearray(setup.boot_img.read_bytes())
    if len(boot) != 512:
        raise BootloaderError(f"{setup.boot_img} is not a 512-byte boot sector")
    sectors = math.ceil(len(core) / 512)
    core += bytes(sectors * 512 - len(core))
    if disk.table == PartitionTable.GPT:
        target = next(p for p in placed if p.plan.type == PartitionType.BIOS_GRUB)
        start, room, where = target.start // 512, target.size, f"partition '{target.plan.name}'"
    else:
        start, room, where = 1, placed[0].start - 512, "the gap before the first partition"
    if len(core) > room:
        raise BootloaderError(
            f"GRUB's core image ({len(core)} bytes) does not fit in {where} ({room} bytes)",
            hint="make it larger (1MiB is usual)",
        )
    struct.pack_into("<QHH", core, BLOCKLIST, start + 1, sectors - 1, KERNEL_SEGMENT)
    with image.open("r+b") as handle:
        mbr = handle.read(512)
        struct.pack_into("<Q", boot, KERNEL_SECTOR, start)
        boot[DRIVE_CHECK : DRIVE_CHECK + 2] = b"\x90\x90"  # a hard disk: trust the BIOS drive
        boot[NT_MAGIC:PART_END] = mbr[NT_MAGIC:PART_END]  # keep the partition table
        handle.seek(start * 512)
        handle.write(core)
        handle.seek(0)
        handle.write(boot)
