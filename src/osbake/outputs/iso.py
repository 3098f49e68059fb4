"""A hybrid live ISO: the tree in a squashfs, its kernel and initrd, GRUB for BIOS and UEFI.

What is on it (live-boot, in the image's initramfs, looks for /live):

    live/vmlinuz, live/initrd.img    the image's kernel and its initramfs (with live-boot)
    live/filesystem.squashfs         the tree, made once, without its own /boot/initrd*
    boot/grub/grub.cfg               the menu entry: boot=live and the plan's command line
    boot/grub/<BIOS platform>/eltorito.img   BIOS: El Torito, and a USB stick through the hybrid MBR
    boot/efi.img                     UEFI: a FAT image (El Torito and a GPT partition) with
                                     EFI/BOOT/BOOT<ARCH>.EFI, Debian's signed shim and
                                     GRUB for CDs when the recipe boots with Secure Boot
    .disk/info                       Debian's signed GRUB for CDs finds the disc by it
    osbake/                          the image's manifest (`osbake inspect` reads it)

Nothing is mounted and nothing needs root: mksquashfs reads the finished tree,
GRUB's images are made by the image's own grub-mkimage (inside the tree, as the
disk's are, so the host's GRUB is not what boots), the FAT image is filled with
mtools and xorriso writes the ISO. grub-mkrescue is not used: given the image's
modules (`-d`), it makes an ISO for that one platform only, and it cannot put
Debian's signed shim in.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from osbake import run as runner
from osbake import sandbox
from osbake.arch import ArchInfo, Firmware
from osbake.disk.bootloader import EFI_MODULES, MODULES, grub_cfg_head, grub_quoted
from osbake.disk.filesystems import make_vfat
from osbake.distros import kernels
from osbake.errors import OutputError
from osbake.manifest import IN_IMAGE_DIR
from osbake.outputs import Output
from osbake.recipe import OutputFormat

if TYPE_CHECKING:
    from osbake.context import Context

MiB = 1024 * 1024
# What the squashfs leaves out (mksquashfs -wildcards, relative to the tree): the
# tree's own initramfs (the ISO carries it beside the squashfs) and what is filled
# at run time.
SQUASHFS_EXCLUDES = (
    "boot/initrd.img*",
    "initrd.img",
    "initrd.img.old",
    "dev/*",
    "proc/*",
    "sys/*",
    "run/*",
    "tmp/*",
)
# An ISO osbake made says so in its application id; `osbake boot` reads it.
APPLICATION_ID = "OSBAKE LIVE"
STAGE = "/run/osbake/iso"
# zstd's level when the recipe gives none: measured on the cloud example (2 cores),
# level 3 took 6.5 s for a 177.5 MB ISO, 9 took 20 s for 167.0 MB, and 15 (mksquashfs's
# default) 101 s for 158.6 MB.
ZSTD_LEVEL = 9
LIVE_ARGUMENT = "boot=live"


class IsoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compression: Literal["zstd", "xz"] = Field(
        "zstd",
        description="the squashfs's compression: zstd is faster to make and to read, "
        "xz about 9% smaller and slower to make",
    )
    level: int | None = Field(
        None,
        ge=1,
        le=22,
        description=f"zstd's level (1-22; default {ZSTD_LEVEL}): 15 (mksquashfs's own default) "
        "makes the cloud example's squashfs 5% smaller in 5 times the time; not for xz",
    )

    @model_validator(mode="after")
    def _level_for_zstd(self) -> IsoSettings:
        if self.level is not None and self.compression != "zstd":
            raise ValueError("level is zstd's; xz has none")
        return self


class Iso(Output):
    format = OutputFormat.ISO
    suffix = ".iso"
    settings_model = IsoSettings
    code = ("osbake.disk.bootloader", "osbake.distros.kernels")
    replaces_disk = True

    def write(self, ctx: Context) -> Path:
        plan = ctx.plan
        info = plan.arch.info
        firmware = list(plan.recipe.boot)
        work = ctx.workdir / "iso"
        shutil.rmtree(work, ignore_errors=True)  # what an interrupted attempt left
        root, stage = work / "root", work / "stage"
        for folder in (root / "live", root / "boot" / "grub", root / ".disk", stage / "efi"):
            folder.mkdir(parents=True)
        vmlinuz, initrd = live_kernel(ctx.tree)
        shutil.copyfile(vmlinuz, root / "live" / "vmlinuz")
        shutil.copyfile(initrd, root / "live" / "initrd.img")
        self.squashfs(ctx, root / "live" / "filesystem.squashfs")
        title = f"{ctx.distro.menu_title} (live)"
        (root / ".disk" / "info").write_text(f"{title} {plan.image}\n")
        in_image = ctx.tree / IN_IMAGE_DIR.lstrip("/")
        if in_image.is_dir():
            shutil.copytree(in_image, root / "osbake")
        date = volume_date(ctx.epoch)
        serial = f"console={info.console}" in plan.cmdline
        (root / "boot" / "grub" / "grub.cfg").write_text(
            live_grub_cfg(title, live_cmdline(plan.cmdline), serial)
        )
        (stage / "early.cfg").write_text(early_cfg(grub_uuid(date)))
        make_boot_images(ctx, info, firmware, stage)
        boot_args: list[str] = []
        bios_platform = info.grub_platform(Firmware.BIOS)
        if Firmware.BIOS in firmware and bios_platform:
            eltorito = f"boot/grub/{bios_platform}/eltorito.img"
            (root / eltorito).parent.mkdir()
            shutil.copyfile(stage / "eltorito.img", root / eltorito)
            boot_args += [
                "-b", eltorito, "-no-emul-boot", "-boot-load-size", "4",
                "-boot-info-table", "--grub2-boot-info",
                "--grub2-mbr", str(stage / "boot_hybrid.img"),
            ]  # fmt: skip
        if any(f.is_uefi for f in firmware):
            efi_image(ctx, stage / "efi", root / "boot" / "efi.img")
            boot_args += ["--efi-boot", "boot/efi.img", "-efi-boot-part", "--efi-boot-image"]
        if boot_args:
            boot_args.append("--protective-msdos-label")
        _clamp_times(root, ctx.epoch)
        dest = ctx.output_path(self.suffix)
        argv = [
            "xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-r",
            "-V", volume_label(plan.image), "-A", f"{APPLICATION_ID} {plan.image}"[:128],
            f"--modification-date={date}", *boot_args, "-o", str(dest), str(root),
        ]  # fmt: skip
        runner.run(argv, env={"SOURCE_DATE_EPOCH": str(ctx.epoch)}, events=ctx.events)
        check_boot_records(dest, firmware)
        shutil.rmtree(work, ignore_errors=True)
        return dest

    def squashfs(self, ctx: Context, dest: Path) -> None:
        """The tree in a squashfs, made once; times from the build's epoch (reproducible)."""
        compression = self.settings.get("compression", "zstd")
        argv = ["mksquashfs", str(ctx.tree), str(dest), "-noappend", "-no-progress"]
        argv += ["-comp", compression]
        if compression == "zstd":
            argv += ["-Xcompression-level", str(self.settings.get("level") or ZSTD_LEVEL)]
        argv += ["-mkfs-time", str(ctx.epoch), "-all-time", str(ctx.epoch)]
        argv += ["-wildcards", "-e", *SQUASHFS_EXCLUDES]  # -e comes last
        runner.run(argv, events=ctx.events)


def live_kernel(tree: Path) -> tuple[Path, Path]:
    """The kernel the image boots and its initramfs (made with live-boot in the tree)."""
    release = kernels.booted_release(tree)
    if release is None:
        raise OutputError(
            "the image has no kernel in /boot, so a live ISO of it cannot boot",
            hint="set 'kernel:' in the recipe (cloud, generic, or a package name)",
        )
    vmlinuz = tree / "boot" / f"vmlinuz-{release}"
    initrd = tree / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise OutputError(
            f"the image has no initramfs for its kernel {release} (/boot/initrd.img-{release})",
            hint="the 'live' element needs initramfs-tools (the 'vm' element brings it)",
        )
    return vmlinuz, initrd


def live_cmdline(cmdline: str) -> str:
    """The plan's command line with boot=live first (the live element puts it there)."""
    words = [w for w in cmdline.split() if w != LIVE_ARGUMENT]
    return " ".join([LIVE_ARGUMENT, *words])


def live_grub_cfg(title: str, cmdline: str, serial: bool) -> str:
    lines = grub_cfg_head(
        "# Written by osbake: the live system (live-boot finds /live/filesystem.squashfs).",
        serial,
    )
    lines += [
        f"menuentry '{grub_quoted(title)}' --id osbake-live {{",
        "\techo 'Loading Linux ...'",
        f"\tlinux /live/vmlinuz {cmdline}",
        "\tinitrd /live/initrd.img",
        "}",
    ]
    return "\n".join(lines) + "\n"


def volume_date(epoch: int) -> str:
    """xorriso's --modification-date (YYYYMMDDhhmmsscc) from the build's epoch."""
    return time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch))


def grub_uuid(date: str) -> str:
    """The UUID GRUB gives the ISO 9660 file system: its modification date."""
    return "-".join(date[i : i + 2] for i in range(0, 16, 2)).replace("-", "", 1)


def early_cfg(uuid: str) -> str:
    """Built into GRUB's images: find the ISO by its UUID and read its grub.cfg."""
    return (
        f"search --no-floppy --fs-uuid --set=root {uuid}\n"
        "set prefix=($root)/boot/grub\n"
        "configfile $prefix/grub.cfg\n"
    )


def volume_label(image: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", image.upper())[:32]


def make_boot_images(ctx: Context, info: ArchInfo, firmware: list[Firmware], stage: Path) -> None:
    """GRUB's El Torito image and EFI loader, made by the image's own grub-mkimage."""
    commands = []
    if Firmware.BIOS in firmware:
        modules = _modules(ctx, info, Firmware.BIOS, [*MODULES, "iso9660", "biosdisk"])
        commands += [
            f"grub-mkimage -O {info.grub_bios}-eltorito -o {STAGE}/eltorito.img -p /boot/grub "
            f"-c {STAGE}/early.cfg {' '.join(modules)}",
            f"cp /usr/lib/grub/{info.grub_bios}/boot_hybrid.img {STAGE}/",
        ]
    uefi = [f for f in firmware if f.is_uefi]
    if uefi:
        platform, lower = info.grub_efi, info.efi_suffix
        commands.append(f"mkdir -p {STAGE}/efi/EFI/BOOT")
        loader = f"{STAGE}/efi/EFI/BOOT/{info.efi_loader}"
        if Firmware.UEFI_SECUREBOOT in uefi:
            # Debian's signed shim, and its signed GRUB for CDs (gcd), which finds the
            # disc by /.disk/info and reads /boot/grub/grub.cfg.
            for source, target in (
                (f"/usr/lib/shim/shim{lower}.efi.signed", loader),
                (f"/usr/lib/grub/{platform}-signed/gcd{lower}.efi.signed", f"grub{lower}.efi"),
                (f"/usr/lib/shim/mm{lower}.efi.signed", f"mm{lower}.efi"),
            ):
                if not (ctx.tree / source.lstrip("/")).is_file():
                    raise OutputError(
                        f"the image has no {source}",
                        hint="Secure Boot needs Debian's "
                        f"{' and '.join(info.secure_boot_packages())} in the image",
                    )
                name = Path(target).name
                commands.append(f"install -m 0644 {source} {STAGE}/efi/EFI/BOOT/{name}")
        else:
            modules = _modules(ctx, info, uefi[0], [*MODULES, *EFI_MODULES, "iso9660"])
            commands.append(
                f"grub-mkimage -O {platform} -o {loader} -p /boot/grub "
                f"-c {STAGE}/early.cfg {' '.join(modules)}"
            )
    if not commands:
        return
    sandbox.run_in_tree(
        ctx.tree,
        ["sh", "-ec", "; ".join(commands)],
        events=ctx.events,
        binds=[sandbox.Bind(stage, STAGE, writable=True)],
        network=False,
        resolver=False,
        hint="the image's GRUB tools failed; run with -v for their output",
    )


def _modules(ctx: Context, info: ArchInfo, firmware: Firmware, wanted: list[str]) -> list[str]:
    platform = info.grub_platform(firmware)
    folder = ctx.tree / "usr" / "lib" / "grub" / str(platform)
    if platform is None or not folder.is_dir():
        raise OutputError(
            f"the image has no GRUB for {firmware} (/usr/lib/grub/{platform})",
            hint=f"install {info.grub_package(firmware)} in the image (the vm element does)",
        )
    return [m for m in wanted if (folder / f"{m}.mod").exists()]


def efi_image(ctx: Context, source: Path, dest: Path) -> None:
    """The FAT image UEFI boots the CD from, filled with mtools (no mounting)."""
    files = [p for p in source.rglob("*") if p.is_file()]
    # Each file in 4 KiB clusters, the FAT, the folders and some room; whole MiB.
    used = sum(math.ceil(p.stat().st_size / 4096) * 4096 for p in files)
    size = math.ceil((used + MiB) / MiB) * MiB
    with dest.open("wb") as handle:
        handle.truncate(size)
    _clamp_times(source, ctx.epoch)
    seed = hashlib.sha256(f"{ctx.plan.image} {ctx.epoch}".encode()).hexdigest()
    make_vfat(
        dest,
        0,
        size,
        source,
        label="EFIBOOT",
        uuid=seed[:32],
        sector_size=512,
        epoch=ctx.epoch,
        events=ctx.events,
    )


def _clamp_times(folder: Path, epoch: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def check_boot_records(iso: Path, firmware: list[Firmware]) -> None:
    """The ISO has an El Torito boot image for each firmware the recipe boots with."""
    report = runner.output(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"])
    platforms = set(re.findall(r"El Torito boot img\s*:\s*\d+\s+(\w+)", report))
    wanted = {"BIOS"} if Firmware.BIOS in firmware else set()
    if any(f.is_uefi for f in firmware):
        wanted.add("UEFI")
    if not wanted <= platforms:
        raise OutputError(
            f"{iso.name} has El Torito boot images for "
            f"{', '.join(sorted(platforms)) or 'nothing'}, expected {', '.join(sorted(wanted))}",
            hint="this is a bug in osbake; run with -v for xorriso's output",
        )
