"""A foreign build's initramfs: mkinitramfs's archive is compressed by the host's zstd,
with mkinitramfs's options, where the stand-in left its marker."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from osbake.distros import host_initramfs
from osbake.errors import DistroError

pytestmark = pytest.mark.real_subprocess


def image_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "boot").mkdir()
    host_zstd = shutil.which("zstd")
    assert host_zstd is not None
    shutil.copy2(host_zstd, tree / "usr/bin/zstd")
    return tree


def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> host_initramfs.Deferred:
    # Outside the sandbox the stand-in's folder is where the test put it.
    work = tmp_path / "work"
    monkeypatch.setattr(host_initramfs, "INSIDE", str(work / "host-initramfs"))
    deferred = host_initramfs.prepare(image_tree(tmp_path), work)
    assert deferred is not None
    return deferred


def test_the_host_compresses_what_mkinitramfs_would_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deferred = stand_in(tmp_path, monkeypatch)
    tree = tmp_path / "tree"
    archive = tmp_path / "main.cpio"
    archive.write_bytes(os.urandom(1000) + b"modules " * 50_000)
    early, late = b"early-cpio-microcode" * 10, b""
    # What mkinitramfs does: early archive, then `$compress -c main`, into the initrd.
    made = subprocess.run(
        ["sh", str(deferred.folder / "zstd"), "-q", "-9", "-T0", "-c", str(archive)],
        check=True,
        capture_output=True,
    ).stdout
    assert made.startswith(deferred.marker.encode())
    initrd = tree / "boot/initrd.img-6.1.0-arm64"
    initrd.write_bytes(early + made + late)
    initrd.chmod(0o600)
    assert host_initramfs.finish(deferred, tree) == 1
    data = initrd.read_bytes()
    assert data.startswith(early) and deferred.marker.encode() not in data
    expected = subprocess.run(
        ["zstd", "-q", "-9", "-T0", "-c", str(archive)], check=True, capture_output=True
    ).stdout
    assert data[len(early) :] == expected  # the same stream the image's zstd makes
    assert initrd.stat().st_mode & 0o777 == 0o600
    assert not deferred.folder.exists()


def test_decompressing_goes_to_the_images_own_zstd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deferred = stand_in(tmp_path, monkeypatch)
    packed = tmp_path / "module.ko.zst"
    subprocess.run(["zstd", "-q", "-o", str(packed), "-"], input=b"ko", check=True)
    out = subprocess.run(
        ["sh", str(deferred.folder / "zstd"), "-q", "-d", "-c", str(packed)],
        check=True,
        capture_output=True,
    ).stdout
    assert out == b"ko"
    assert not list(deferred.folder.glob("*.cpio"))


def test_options_it_does_not_know_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deferred = stand_in(tmp_path, monkeypatch)
    (deferred.folder / "0.cpio").write_bytes(b"x")
    (deferred.folder / "0.args").write_text("-q\n--exec=evil\n-c\n/tmp/x\n")
    (tmp_path / "tree/boot/initrd.img-1").write_bytes(deferred.marker.encode() + b"0.")
    with pytest.raises(DistroError, match="--exec=evil"):
        host_initramfs.finish(deferred, tmp_path / "tree")


def test_no_zstd_in_the_image_defers_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    assert host_initramfs.prepare(tree, tmp_path / "work") is None
