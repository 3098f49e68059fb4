"""sync from a directory into a directory (no processes, no keyring): resume, refusal of a
changed file, unsafe paths, a second run that transfers nothing; target helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from osbake.errors import PublishError, VerifyError
from osbake.events import Events
from osbake.publish import publish, publish_streams
from osbake.publish.source import Source, strip_clearsign
from osbake.publish.streams import Item
from osbake.publish.sync import sync
from osbake.publish.targets import open_target
from osbake.publish.targets.directory import DirectoryTarget
from osbake.publish.targets.ec2 import BLOCK, ami_name, boot_mode, data_blocks
from osbake.publish.targets.glance import image_name, image_properties
from tests.publish_helpers import make_build


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    manifest = make_build(tmp_path / "out", files={"demo.qcow2": ("qcow2", os.urandom(3 << 20))})
    publish([manifest], tmp_path / "repo")
    return tmp_path / "repo"


def test_sync_copies_checks_and_then_has_everything(repo: Path, tmp_path: Path) -> None:
    seen: list[dict] = []
    result = sync(str(repo), str(tmp_path / "mirror"), events=Events(seen.append), jobs=2)
    assert len(result.transferred) == 2
    assert result.bytes == sum(i.size or 0 for i in result.transferred)
    assert any(e["event"] == "progress" and e["name"] == "demo.qcow2" for e in seen)
    again = sync(str(repo), str(tmp_path / "mirror"))
    assert again.transferred == []
    mirrored = json.loads((tmp_path / "mirror/streams/v1/index.json").read_text())
    assert list(mirrored["index"]) == ["org.osbake:daily:download"]


def test_a_partial_file_is_resumed_not_restarted(repo: Path, tmp_path: Path) -> None:
    source = repo / "demo/bookworm/amd64/20261120/demo.qcow2"
    dest = tmp_path / "mirror/demo/bookworm/amd64/20261120/demo.qcow2"
    dest.parent.mkdir(parents=True)
    have = 2 << 20
    (dest.parent / ".demo.qcow2.partial").write_bytes(source.read_bytes()[:have])
    result = sync(str(repo), str(tmp_path / "mirror"), filters=["ftype=disk1.img"])
    assert result.bytes == source.stat().st_size - have
    assert dest.read_bytes() == source.read_bytes()


def test_a_changed_file_is_refused_and_not_kept(repo: Path, tmp_path: Path) -> None:
    image = repo / "demo/bookworm/amd64/20261120/demo.qcow2"
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF
    image.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="checksum mismatch, refused"):
        sync(str(repo), str(tmp_path / "mirror"))
    folder = tmp_path / "mirror/demo/bookworm/amd64/20261120"
    assert sorted(p.name for p in folder.iterdir()) == ["demo.manifest.json"]


def test_unsafe_paths_in_a_stream_are_refused(repo: Path, tmp_path: Path) -> None:
    products = repo / "streams/v1/org.osbake:daily:download.json"
    products.write_text(products.read_text().replace('"path": "demo/', '"path": "../demo/'))
    with pytest.raises(VerifyError, match="unsafe path"):
        sync(str(repo), str(tmp_path / "mirror"))


def test_sources_and_targets_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="no such directory"):
        Source(str(tmp_path / "nowhere"))
    with pytest.raises(PublishError, match="http, https and file"):
        Source("ftp://example.org/tree")
    source = Source("https://images.example.org/streams/v1/index.json", keyring=Path("k"))
    assert source.url == "https://images.example.org/"
    assert source.start == "streams/v1/index.sjson"  # a keyring reads the signed files
    assert isinstance(open_target(str(tmp_path / "m")), DirectoryTarget)
    assert isinstance(open_target(f"dir:{tmp_path / 'm'}"), DirectoryTarget)


def test_strip_clearsign_keeps_the_signed_text() -> None:
    signed = (
        b'-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{"a": 1}\n- --x\n'
        b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"
    )
    assert strip_clearsign(signed) == b'{"a": 1}\n--x\n'


def _item(**fields: object) -> Item:
    data = {
        "arch": "amd64",
        "os": "debian",
        "release": "bookworm",
        "version": "12",
        "ftype": "disk1.img",
        "path": "p/d.img",
        "size": 1,
        "sha256": "00" * 32,
        **fields,
    }
    return Item("c:daily:download", "c:img:bookworm:amd64", "20261120", "disk1.img", data)


def test_cloud_names_and_properties_come_from_the_product() -> None:
    item = _item(pubname="img-bookworm-amd64-20261120", label="daily")
    assert image_name(item) == "img-bookworm-amd64-20261120"
    assert image_name(_item()) == "debian-bookworm-amd64-20261120"
    props = image_properties(item)
    assert props["architecture"] == "x86_64"
    assert props["product_name"] == "c:img:bookworm:amd64"
    assert props["os_version"] == "12"
    assert ami_name(_item(pubname="a:b c")) == "a_b c"
    assert boot_mode(_item(boot="bios,uefi")) == "uefi-preferred"
    assert boot_mode(_item(boot="uefi")) == "uefi"
    assert boot_mode(_item(boot="bios")) == "legacy-bios"
    assert boot_mode(_item()) is None
    assert boot_mode(_item(arch="arm64")) == "uefi"


def test_data_blocks_skip_holes(tmp_path: Path) -> None:
    disk = tmp_path / "sparse.raw"
    with disk.open("wb") as handle:
        handle.truncate(64 * BLOCK)
        handle.seek(5 * BLOCK + 7)
        handle.write(b"x")
        handle.seek(40 * BLOCK - 1)
        handle.write(b"yy")  # straddles blocks 39 and 40
    fd = os.open(disk, os.O_RDONLY)
    try:
        blocks = list(data_blocks(fd, disk.stat().st_size))
    finally:
        os.close(fd)
    # The filesystem may report data in larger extents; the blocks written must be there
    # and most of the disk must be skipped.
    assert {5, 39, 40} <= set(blocks)
    assert len(blocks) < 32


def test_a_file_listed_by_two_streams_is_downloaded_once(tmp_path: Path) -> None:
    manifest = make_build(tmp_path / "out", files={"demo.qcow2": ("qcow2", os.urandom(1 << 20))})
    publish_streams(tmp_path / "repo", daily=[manifest], released=[manifest])
    result = sync(str(tmp_path / "repo"), str(tmp_path / "mirror"), filters=["ftype=disk1.img"])
    assert result.bytes == 1 << 20
    mirrored = json.loads((tmp_path / "mirror/streams/v1/index.json").read_text())
    assert sorted(mirrored["index"]) == [
        "org.osbake:daily:download",
        "org.osbake:released:download",
    ]
    assert sync(str(tmp_path / "repo"), str(tmp_path / "mirror")).transferred[0].name == "manifest"
