"""Small disk images for the deploy tests, made offline with the real tools.

A GPT (or MBR) disk with an ESP (vfat) and a root partition (ext4 populated with
mkfs.ext4 -d), converted to qcow2 and raw.tar.xz, with a manifest beside them
that records each artifact's sha256, as `osbake build` writes it.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from osbake.manifest import ArtifactEntry, Manifest

MIB = 1 << 20


def sh(*argv: str | Path, input: bytes | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], input=input, capture_output=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{argv} failed: {result.stderr.decode()[-2000:]}")
    return result.stdout.decode()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class SampleDisk:
    raw: Path
    qcow2: Path
    tar_xz: Path
    size: int
    root_number: int
    root_start: int  # bytes
    manifest: Path


def make_disk(
    folder: Path, *, size_mib: int = 48, table: str = "gpt", name: str = "disk"
) -> SampleDisk:
    """A bootable-looking disk: ESP (8 MiB, vfat) then root (ext4, the rest)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"{name}.raw"
    sh("truncate", "-s", f"{size_mib}M", raw)
    if table == "gpt":
        script = (
            "label: gpt\n"
            "start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
            "start=18432, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
        )
    else:
        script = "label: dos\nstart=2048, size=16384, type=ef\nstart=18432, type=83\n"
    sh("sfdisk", "--quiet", raw, input=script.encode())
    # Boot code in the first 440 bytes, where GRUB's boot.img lives: it must survive.
    with raw.open("r+b") as handle:
        handle.write(_noise(440))
    layout = sh("sfdisk", "--dump", raw)
    root_line = next(line for line in layout.splitlines() if line.startswith(f"{raw}2"))
    root_sectors = int(root_line.split("size=")[1].split(",")[0])

    tree = folder / f"{name}-tree"
    (tree / "etc").mkdir(parents=True, exist_ok=True)
    (tree / "etc" / "hostname").write_text("test-disk\n")
    (tree / "usr" / "share").mkdir(parents=True, exist_ok=True)
    # Incompressible data, so that the images hold real non-zero runs.
    (tree / "usr" / "share" / "blob").write_bytes(_noise(3 * MIB))
    root_img = folder / f"{name}-root.img"
    sh("truncate", "-s", str(root_sectors * 512), root_img)
    sh("mkfs.ext4", "-q", "-F", "-d", tree, "-L", "root", root_img)
    esp_img = folder / f"{name}-esp.img"
    sh("mkfs.vfat", "-C", "-n", "ESP", esp_img, str(16384 // 2))
    sh(
        "dd",
        f"if={esp_img}",
        f"of={raw}",
        "bs=1M",
        f"seek={2048 * 512 // MIB}",
        "conv=notrunc,sparse",
        "status=none",
    )
    sh(
        "dd",
        f"if={root_img}",
        f"of={raw}",
        "bs=1M",
        f"seek={18432 * 512 // MIB}",
        "conv=notrunc,sparse",
        "status=none",
    )
    esp_img.unlink()
    root_img.unlink()

    qcow2 = folder / f"{name}.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, qcow2)
    tar_xz = folder / f"{name}.raw.tar.xz"
    sh(
        "tar",
        "-C",
        folder,
        "--format=gnu",
        "-cSJf",
        tar_xz,
        f"--transform=s|{raw.name}|disk.raw|",
        raw.name,
    )
    manifest = write_manifest(folder, name, [raw, qcow2, tar_xz])
    return SampleDisk(raw, qcow2, tar_xz, size_mib * MIB, 2, 18432 * 512, manifest)


def _noise(length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:length])


def write_manifest(folder: Path, name: str, artifacts: list[Path]) -> Path:
    formats = {".raw": "raw", ".qcow2": "qcow2", ".xz": "raw.tar.xz"}
    manifest = Manifest(
        osbake_version="test",
        image=name,
        name=name,
        arch="amd64",
        distro="debian",
        release="bookworm",
        recipe={"name": name},
        recipe_sha256="0" * 64,
        artifacts=[
            ArtifactEntry(
                file=path.name,
                format=formats[path.suffix],
                size=path.stat().st_size,
                sha256=sha256(path),
            )
            for path in artifacts
        ],
    )
    path = folder / f"{name}.manifest.json"
    path.write_text(manifest.to_json())
    return path
