"""deploy() end to end on images without a partition table (no tool is needed for those;
they are written with raw=True, which --raw gives), and every refusal that must leave the
target as it was."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from osbake.deploy import deploy
from osbake.deploy.target import Host
from osbake.errors import ArtifactError, UsageError
from osbake.events import Events

MIB = 1 << 20


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A machine with nothing mounted (the real one's mounts are not this test's business)."""
    root = tmp_path / "host"
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "mountinfo").write_text("")
    return Host(root)


def disk_bytes() -> bytes:
    data = bytearray(6 * MIB)
    data[0:5] = b"first"
    data[3 * MIB : 3 * MIB + 200_000] = hashlib.sha256(b"x").digest() * 6250
    data[-4:] = b"last"
    return bytes(data)


def with_manifest(image: Path, *, sha256: str | None = None, size: int | None = None) -> None:
    entry = {
        "file": image.name,
        "format": "raw",
        "size": image.stat().st_size if size is None else size,
        "sha256": sha256 or hashlib.sha256(image.read_bytes()).hexdigest(),
    }
    (image.parent / "img.manifest.json").write_text(json.dumps({"artifacts": [entry]}))


def test_raw_image_to_a_new_file(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(disk_bytes())
    with_manifest(image)
    seen: list[dict] = []
    target = tmp_path / "target.img"
    report = deploy(
        image, target, size=8 * MIB, verify=True, host=host, events=Events(seen.append), raw=True
    )
    content = target.read_bytes()
    assert len(content) == 8 * MIB
    assert content[: 6 * MIB] == disk_bytes()
    assert content[6 * MIB :] == bytes(2 * MIB)
    assert report.verified
    assert report.checksum_source == "manifest img.manifest.json"
    assert report.written < MIB
    assert report.written + report.skipped == 6 * MIB
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "begin"
    assert kinds[-1] == "finish"
    assert seen[-1]["ok"] is True
    assert [e["name"] for e in seen if e["event"] == "step"] == [
        "check",
        "checksum",
        "write",
        "verify",
        "table",
    ]
    assert any(e["event"] == "progress" and e["name"] == "write" for e in seen)


def test_tar_gz_image(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw.tar.gz"
    with tarfile.open(image, "w:gz") as archive:
        info = tarfile.TarInfo("disk.raw")
        info.size = 6 * MIB
        archive.addfile(info, io.BytesIO(disk_bytes()))
    target = tmp_path / "target.img"
    target.write_bytes(b"\xee" * 6 * MIB)
    report = deploy(
        image, target, sha256=hashlib.sha256(image.read_bytes()).hexdigest(), host=host, raw=True
    )
    assert report.format == "raw.tar"
    assert report.checksum_source == "--sha256"
    assert target.read_bytes() == disk_bytes()


def test_checksum_mismatch_leaves_the_target_alone(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(disk_bytes())
    with_manifest(image, sha256="0" * 64)
    target = tmp_path / "target.img"
    target.write_bytes(b"precious" * MIB)
    seen: list[dict] = []
    with pytest.raises(ArtifactError, match="does not match its checksum") as caught:
        deploy(image, target, host=host, events=Events(seen.append), raw=True)
    assert "target was not touched" in (caught.value.hint or "")
    assert target.read_bytes() == b"precious" * MIB
    assert seen[-1] == {**seen[-1], "event": "finish", "ok": False, "step": "checksum"}


def test_truncated_image_is_caught_by_its_size(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(disk_bytes())
    with_manifest(image, size=8 * MIB)
    target = tmp_path / "target.img"
    target.write_bytes(b"precious" * MIB)
    with pytest.raises(ArtifactError, match="truncated"):
        deploy(image, target, host=host, raw=True)
    assert target.read_bytes() == b"precious" * MIB


def test_target_too_small(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(disk_bytes())
    with_manifest(image)
    target = tmp_path / "target.img"
    target.write_bytes(b"precious" * (MIB // 2))
    with pytest.raises(UsageError, match="too small"):
        deploy(image, target, host=host, raw=True)
    assert target.read_bytes() == b"precious" * (MIB // 2)


def test_without_a_checksum_it_asks(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(disk_bytes())
    target = tmp_path / "target.img"
    with pytest.raises(UsageError, match="nothing to check") as caught:
        deploy(image, target, size=8 * MIB, host=host, raw=True)
    assert "--no-checksum" in (caught.value.hint or "")
    assert not target.exists()
    report = deploy(image, target, size=8 * MIB, checksum=False, host=host, raw=True)
    assert "not verified" in report.notes[0]
    with pytest.raises(UsageError, match="64 hexadecimal"):
        deploy(image, tmp_path / "t2", size=8 * MIB, sha256="abc", host=host, raw=True)


def test_grow_needs_a_partition_table(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(disk_bytes())
    with_manifest(image)
    with pytest.raises(ArtifactError, match="no partition table"):
        deploy(image, tmp_path / "t", size=8 * MIB, grow=True, host=host, raw=True)


def test_seed_and_configdrive_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="either --seed or --configdrive"):
        deploy(tmp_path / "a", tmp_path / "b", seed=tmp_path / "s", configdrive=tmp_path / "c")


def test_seed_must_be_a_seed(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(disk_bytes())
    with_manifest(image)
    not_seed = tmp_path / "seed.img"
    not_seed.write_bytes(bytes(MIB))
    with pytest.raises(UsageError, match="cloud-init looks for the label"):
        deploy(image, tmp_path / "t", size=16 * MIB, seed=not_seed, host=host, raw=True)
    with pytest.raises(UsageError, match="no such file"):
        deploy(image, tmp_path / "t", size=16 * MIB, seed=tmp_path / "none", host=host, raw=True)
    big = tmp_path / "big.img"
    big.write_bytes(b"")
    with big.open("r+b") as handle:
        handle.truncate(65 * MIB)
    with pytest.raises(UsageError, match="64 MiB at most"):
        deploy(image, tmp_path / "t", size=128 * MIB, configdrive=big, host=host, raw=True)


def test_missing_image(tmp_path: Path, host: Host) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        deploy(tmp_path / "nope.qcow2", tmp_path / "t", size=MIB, host=host, raw=True)


def test_foreign_formats_are_named(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.vmdk"
    image.write_bytes(b"KDMV" + bytes(1020))
    with pytest.raises(ArtifactError, match="is a vmdk image") as caught:
        deploy(image, tmp_path / "t", size=MIB, host=host, raw=True)
    assert "qemu-img convert" in (caught.value.hint or "")


def test_a_new_target_file_appears_only_when_complete(tmp_path: Path, host: Host) -> None:
    image = tmp_path / "disk.raw.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("disk.raw")
        info.size = 6 * MIB
        archive.addfile(info, io.BytesIO(disk_bytes()))
    image.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # cut in half
    target = tmp_path / "new.img"
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        deploy(image, target, size=8 * MIB, checksum=False, host=host, raw=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw.tar.gz", "host"]
