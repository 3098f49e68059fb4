"""Small bootable media for the `osbake boot` tests, made in seconds with real tools.

- `grub_iso()`: a GRUB rescue ISO (grub-mkrescue) that boots under SeaBIOS and
  OVMF and prints markers on the serial console. It is a hybrid image: as a disk
  it boots too.
- `writer_disk()`: a 1 MiB raw disk whose boot sector writes to its own disk
  through the BIOS and then says so on COM1 (the image must stay unchanged).
- `signed_esp()`: a FAT disk with Debian's Microsoft-signed shim and Debian-signed
  GRUB, which boots with Secure Boot on.
- `vfat_seed()`, `iso_seed()`: NoCloud-like seeds (label cidata, /meta-data).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

MARKER = "OSBAKE-MARKER"
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
SIGNED_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")

# GRUB's console is the first serial port; the lines after it are the test's.
SERIAL = """serial --unit=0 --speed=115200
terminal_output serial
terminal_input serial
"""
GRUB_BODY = f"""echo "osbake test media"
if [ "$grub_platform" = "efi" ]; then echo "OSBAKE-PLATFORM-EFI"; else echo "OSBAKE-PLATFORM-PC"; fi
set seed=none
for d in hd0 hd1 cd0 cd1; do if [ -e ($d)/meta-data ]; then set seed=$d; fi; done
if [ "$seed" = "none" ]; then echo "OSBAKE-NO-SEED"; else echo "OSBAKE-SEED-FOUND on $seed"; fi
echo "{MARKER}"
"""


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t, path=os.environ["PATH"] + ":/usr/sbin") is None]
    if missing:
        pytest.skip(
            "missing " + ", ".join(missing) + " (requirements/apt/vm.txt: run 'make setup')"
        )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def grub_iso(path: Path, body: str = GRUB_BODY + "sleep 600\n") -> Path:
    """A GRUB rescue ISO whose grub.cfg prints `body` on the serial console."""
    require("grub-mkrescue", "xorriso", "mformat")
    tree = path.parent / (path.stem + ".tree")
    (tree / "boot" / "grub").mkdir(parents=True)
    (tree / "boot" / "grub" / "grub.cfg").write_text(SERIAL + body)
    subprocess.run(
        ["grub-mkrescue", "--locales=", "--fonts=", "--themes=", "-o", str(path), str(tree)],
        check=True,
        capture_output=True,
    )
    return path


# The boot sector of writer_disk():
#     cli; cld; xor ax,ax; mov ds,ax; mov es,ax; mov ss,ax; mov sp,0x7c00; sti
#     mov ax,0x0301; mov cx,2; xor dh,dh; mov bx,0x7c00; int 0x13  (copy itself to sector 2)
#     mov si,ok; jnc 1f; mov si,bad
#  1: mov dx,0x3f8
#  2: lodsb; test al,al; jz 3f; out dx,al; jmp 2b
#  3: hlt; jmp 3b
WRITER_CODE = bytes.fromhex(
    "fafc31c08ed88ec08ed0bc007cfbb80103b9020030f6bb007ccd13be317c7303be467c"
    "baf803ac84c07403eeebf8f4ebfd"
)
WRITTEN = "OSBAKE-DISK-WRITTEN"


def writer_disk(path: Path) -> Path:
    ok = WRITTEN.encode() + b"\n\0"
    bad = b"OSBAKE-DISK-WRITE-FAILED\n\0"
    sector = WRITER_CODE + ok + bad
    assert struct.unpack_from("<H", WRITER_CODE, 0x1C)[0] == 0x7C00 + len(WRITER_CODE)
    sector += bytes(510 - len(sector)) + b"\x55\xaa"
    path.write_bytes(sector + bytes(1024 * 1024 - 512))
    return path


def convert(source: Path, fmt: str, path: Path) -> Path:
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", fmt, str(source), str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _fat_image(path: Path, label: str, files: dict[str, bytes], size_kib: int = 8192) -> Path:
    require("mkfs.vfat", "mcopy", "mmd")
    subprocess.run(
        ["mkfs.vfat", "-C", "-n", label, str(path), str(size_kib)], check=True, capture_output=True
    )
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    made: set[str] = set()
    for name, data in files.items():
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                mmd = ["mmd", "-i", str(path), f"::/{folder}"]
                subprocess.run(mmd, check=True, env=env, capture_output=True)
                made.add(folder)
        source = path.parent / (path.name + ".part")
        source.write_bytes(data)
        subprocess.run(
            ["mcopy", "-i", str(path), str(source), f"::/{name.strip('/')}"],
            check=True,
            env=env,
            capture_output=True,
        )
        source.unlink()
    return path


def signed_esp(path: Path, body: str) -> Path:
    """A FAT disk: /EFI/BOOT/BOOTX64.EFI = signed shim, grubx64.efi = signed GRUB.

    Debian's signed GRUB has a built-in config that ends with `source
    $cmdpath/grub.cfg`, so /EFI/BOOT/grub.cfg is read.
    """
    for needed in (SHIM, SIGNED_GRUB):
        if not needed.is_file():
            pytest.skip(f"missing {needed} (packages shim-signed, grub-efi-amd64-signed)")
    return _fat_image(
        path,
        "OSBAKESB",
        {
            "EFI/BOOT/BOOTX64.EFI": SHIM.read_bytes(),
            "EFI/BOOT/grubx64.efi": SIGNED_GRUB.read_bytes(),
            "EFI/BOOT/grub.cfg": body.encode(),
        },
    )


SEED_FILES = {"meta-data": b"instance-id: osbake-test\n", "user-data": b"#cloud-config\n"}


def vfat_seed(path: Path) -> Path:
    return _fat_image(path, "CIDATA", SEED_FILES, size_kib=1024)


def iso_seed(path: Path) -> Path:
    require("xorriso")
    tree = path.parent / (path.stem + ".tree")
    tree.mkdir()
    for name, data in SEED_FILES.items():
        (tree / name).write_bytes(data)
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o", str(path),
         str(tree)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return path
