"""What gets attached: image kinds and formats, seeds, archives, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from osbake import run, vm
from osbake.errors import ArtifactError, UsageError
from osbake.vm.media import _is_tar


def fake_qemu_img(monkeypatch: pytest.MonkeyPatch, fmt: str) -> list[list[str]]:
    calls: list[list[str]] = []

    def output(argv: list[Any], **kwargs: Any) -> str:
        calls.append([os.fspath(a) for a in argv])
        return json.dumps({"format": fmt, "virtual-size": 1048576})

    monkeypatch.setattr(run, "output", output)
    return calls


def iso_file(path: Path) -> Path:
    path.write_bytes(bytes(0x8001) + b"CD001" + bytes(4000))
    return path


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk", "vpc", "vhdx"])
def test_disk_formats(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4096))
    calls = fake_qemu_img(monkeypatch, fmt)
    media = vm.prepare_image(image, tmp_path)
    assert media == vm.Media(image, fmt, vm.MediaKind.DISK)
    assert calls == [["qemu-img", "info", "--output=json", str(image)]]


def vhd_footer(disk_type: int) -> bytes:
    footer = bytearray(512)
    footer[:8] = b"conectix"
    footer[60:64] = disk_type.to_bytes(4, "big")
    return bytes(footer)


@pytest.mark.parametrize(("disk_type", "fmt"), [(2, "vpc"), (3, "raw")])
def test_a_fixed_vhd_probed_as_raw_is_read_as_a_vhd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, disk_type: int, fmt: str
) -> None:
    image = tmp_path / "renamed.img"
    image.write_bytes(bytes(4096) + vhd_footer(disk_type))
    fake_qemu_img(monkeypatch, "raw")
    assert vm.prepare_image(image, tmp_path).format == fmt


def test_an_iso_is_a_cdrom(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_qemu_img(monkeypatch, "raw")
    image = iso_file(tmp_path / "live.ISO")
    assert vm.prepare_image(image, tmp_path).kind == vm.MediaKind.CDROM


def test_an_unknown_format_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_qemu_img(monkeypatch, "luks")
    image = tmp_path / "secret.img"
    image.write_bytes(bytes(4096))
    with pytest.raises(ArtifactError, match="a 'luks' image") as caught:
        vm.prepare_image(image, tmp_path)
    assert "qemu-img convert" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("magic", "name"),
    [(b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd")],
)
def test_compressed_images_are_refused_before_qemu_img(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, magic: bytes, name: str
) -> None:
    monkeypatch.setattr(run, "output", lambda *a, **k: pytest.fail("ran qemu-img"))
    image = tmp_path / "disk.raw.x"
    image.write_bytes(magic + bytes(100))
    with pytest.raises(ArtifactError, match=f"compressed with {name}"):
        vm.prepare_image(image, tmp_path)


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_a_missing_image(tmp_path: Path, make: str) -> None:
    image = tmp_path / "disk.qcow2"
    if make == "directory":
        image.mkdir()
    with pytest.raises(UsageError, match="does not exist" if make == "missing" else "not a file"):
        vm.prepare_image(image, tmp_path)


def test_tar_archives_are_recognised(tmp_path: Path) -> None:
    for name in ("disk.raw.tar.xz", "disk.tar.gz", "disk.tgz", "disk.tar.zst", "disk.tar"):
        (tmp_path / name).write_bytes(bytes(600))
        assert _is_tar(tmp_path / name)
    plain = tmp_path / "disk.bin"
    plain.write_bytes(bytes(257) + b"ustar\x0000" + bytes(300))
    assert _is_tar(plain)
    other = tmp_path / "disk.raw"
    other.write_bytes(bytes(600))
    assert not _is_tar(other)


def test_an_archive_must_hold_one_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_tar(argv: list[Any], **kwargs: Any) -> None:
        target = Path(argv[argv.index("-C") + 1])
        (target / "disk.raw").write_bytes(b"x")
        (target / "README").write_bytes(b"y")

    monkeypatch.setattr(run, "run", fake_tar)
    archive = tmp_path / "two.raw.tar.xz"
    archive.write_bytes(bytes(600))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ArtifactError, match="holds 2 files"):
        vm.prepare_image(archive, work)


def test_an_archive_with_one_disk_boots_that_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fake_tar(argv: list[Any], **kwargs: Any) -> None:
        (Path(argv[argv.index("-C") + 1]) / "disk.raw").write_bytes(bytes(4096))

    monkeypatch.setattr(run, "run", fake_tar)
    fake_qemu_img(monkeypatch, "raw")
    archive = tmp_path / "img.raw.tar.xz"
    archive.write_bytes(bytes(600))
    work = tmp_path / "work"
    work.mkdir()
    media = vm.prepare_image(archive, work)
    assert media == vm.Media(work / "extracted" / "disk.raw", "raw", vm.MediaKind.DISK)


def test_seeds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_qemu_img(monkeypatch, "raw")
    iso = iso_file(tmp_path / "seed")
    assert vm.prepare_seed(iso) == vm.Media(iso, "raw", vm.MediaKind.CDROM)
    vfat = tmp_path / "seed.img"
    vfat.write_bytes(bytes(0x9000))
    assert vm.prepare_seed(vfat) == vm.Media(vfat, "raw", vm.MediaKind.DISK)
    with pytest.raises(UsageError, match=r"--seed: .* does not exist"):
        vm.prepare_seed(tmp_path / "none.iso")


def test_the_overlay_reads_through_to_the_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(
        run, "run", lambda argv, **kwargs: calls.append([os.fspath(a) for a in argv])
    )
    monkeypatch.chdir(tmp_path)
    media = vm.create_overlay(
        vm.Media(Path("disk.vmdk"), "vmdk", vm.MediaKind.DISK), tmp_path / "o.qcow2"
    )
    assert media == vm.Media(tmp_path / "o.qcow2", "qcow2", vm.MediaKind.DISK)
    assert calls == [
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "vmdk", "-b",
         str(tmp_path / "disk.vmdk"), str(tmp_path / "o.qcow2")]
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "mib"), [("1024", 1024), ("512M", 512), ("2G", 2048), ("4GiB", 4096), (" 64 ", 64)]
)
def test_memory_sizes(text: str, mib: int) -> None:
    assert vm.parse_memory(text) == mib


@pytest.mark.parametrize("text", ["lots", "1T", "-5", "1.5G", ""])
def test_bad_memory_sizes(text: str) -> None:
    with pytest.raises(UsageError, match="is not a memory size"):
        vm.parse_memory(text)


def test_stale_work_directories_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / "osbake-boot-dead"
    dead.mkdir()
    (dead / "overlay.qcow2").write_bytes(b"x")
    (tmp_path / "osbake-boot-dead.lock").write_text("")  # a claim nobody holds
    unclaimed = tmp_path / "osbake-boot-unclaimed"  # the claim comes before the folder
    unclaimed.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    (tmp_path / "something-else.lock").write_text("")
    with vm.workspace(tmp_path) as alive:
        assert alive.with_name(alive.name + ".lock").is_file()
        vm.sweep_stale_workdirs(tmp_path)  # another boot sweeping: this one is claimed
        assert alive.is_dir()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [alive.name, alive.name + ".lock", "something-else", "something-else.lock"]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["something-else", "something-else.lock"]
