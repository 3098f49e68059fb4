"""Small disk images with a manifest inside, in every container format osbake writes.

Made with the real tools (mkfs.ext4 -d, mkfs.btrfs --rootdir, sfdisk, qemu-img, tar)
in a second or two each, without a build and without root.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from osbake.arch import ARCHITECTURES, Arch
from osbake.manifest import IN_IMAGE_DIR, Manifest, recipe_digest

MiB = 1 << 20
ROOT_TYPE = ARCHITECTURES[Arch.AMD64].gpt_root
USR_TYPE = ARCHITECTURES[Arch.AMD64].gpt_usr
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
RECIPE = {
    "name": "tiny",
    "distro": "debian",
    "release": "bookworm",
    "arch": ["amd64"],
    "files": [{"src": "files/motd", "dest": "/etc/motd"}],
}


def manifest(name: str = "tiny") -> Manifest:
    recipe = {**RECIPE, "name": name}
    return Manifest(
        osbake_version="test",
        image=name,
        name=name,
        arch="amd64",
        distro="debian",
        release="bookworm",
        recipe=recipe,
        recipe_sha256=recipe_digest(recipe),
    )


def run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


def root_tree(folder: Path, name: str = "tiny", *, prefix: str = IN_IMAGE_DIR) -> Path:
    """A root tree holding the manifest at `prefix` (and some other files)."""
    tree = folder / "tree"
    share = tree / prefix.lstrip("/")
    share.mkdir(parents=True)
    (share / "manifest.json").write_text(manifest(name).to_json())
    (tree / "etc").mkdir(exist_ok=True)
    (tree / "etc" / "motd").write_text("hello\n")
    return tree


def filesystem(tree: Path, fs: str, dest: Path) -> Path:
    if fs == "ext4":
        run("truncate", "-s", "16M", dest)
        run("mkfs.ext4", "-q", "-F", "-d", tree, dest)
    else:
        dest.touch()
        run("mkfs.btrfs", "-q", "-f", "--rootdir", tree, "--shrink", dest)
    return dest


def disk(filesystems: list[tuple[str, Path | None]], dest: Path) -> Path:
    """A GPT disk with one partition per (type GUID, file system file or None: 1 MiB empty)."""
    sizes = [(-(-f.stat().st_size // MiB) if f is not None else 1) for _, f in filesystems]
    run("truncate", "-s", f"{sum(sizes) + 2}M", dest)
    script = "label: gpt\n" + "".join(
        f"size={size}MiB, type={kind}\n" for (kind, _), size in zip(filesystems, sizes, strict=True)
    )
    subprocess.run(["sfdisk", "-q", str(dest)], input=script.encode(), check=True)
    start = 1
    for (_, fs), size in zip(filesystems, sizes, strict=True):
        if fs is not None:
            run(
                "dd",
                f"if={fs}",
                f"of={dest}",
                "bs=1M",
                f"seek={start}",
                "conv=notrunc,sparse",
                "status=none",
            )
        start += size
    return dest


def convert(raw: Path, fmt: str, dest: Path) -> Path:
    """raw -> qcow2, vmdk, vhdx, vhd (dynamic), vhd-fixed, raw.tar.xz, raw.tar.gz."""
    if fmt.startswith("raw.tar."):
        folder = dest.parent / f"tar-{dest.name}"
        folder.mkdir()
        shutil.copy(raw, folder / "disk.raw")
        flag = {"xz": "-J", "gz": "-z"}[fmt.rsplit(".", 1)[1]]
        run("tar", "--sparse", flag, "-cf", dest, "-C", folder, "disk.raw")
        shutil.rmtree(folder)
        return dest
    options = {
        "qcow2": ["-O", "qcow2", "-c"],
        "vmdk": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
        "vhdx": ["-O", "vhdx"],
        "vhd": ["-O", "vpc"],
        "vhd-fixed": ["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
    }[fmt]
    run("qemu-img", "convert", "-f", "raw", *options, raw, dest)
    return dest
