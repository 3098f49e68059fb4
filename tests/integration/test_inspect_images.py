"""osbake inspect reads the manifest from inside disk images of every format, unprivileged.

Real tools on small images (tests/integration/inspect_images.py): every container
format osbake writes, ext4 and btrfs roots, a /usr partition, a disk without a
partition table, an MBR; and images that are not osbake's, or are crafted.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from osbake import image_files
from osbake.errors import ArtifactError
from osbake.inspect import inspect_artifact
from osbake.manifest import IN_IMAGE_DIR
from tests.conftest import REPO
from tests.integration import inspect_images as images

FORMATS = ("raw", "qcow2", "vmdk", "vhdx", "vhd", "vhd-fixed", "raw.tar.xz", "raw.tar.gz")
MANIFEST = f"{IN_IMAGE_DIR}/manifest.json"
LVM_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Temporary files go to a folder of the test's own, which must be empty afterwards."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == []


@pytest.fixture(scope="module", params=["ext4", "btrfs"])
def raw_disk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ESP-typed empty partition, then the root file system with the manifest inside."""
    folder = tmp_path_factory.mktemp(request.param)
    fs = images.filesystem(
        images.root_tree(folder, f"tiny-{request.param}"), request.param, folder / "fs.img"
    )
    return images.disk([(images.ESP_TYPE, None), (images.ROOT_TYPE, fs)], folder / "disk.raw")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_and_file_system_leads_back_to_its_manifest(
    raw_disk: Path, fmt: str, tmp_path: Path
) -> None:
    fs = "btrfs" if "btrfs" in raw_disk.parent.name else "ext4"
    image = raw_disk if fmt == "raw" else images.convert(raw_disk, fmt, tmp_path / "renamed.bin")
    found = inspect_artifact(image)
    assert found.manifest.name == f"tiny-{fs}"
    assert found.source == f"inside {image.name} (partition 2, {fs}: {MANIFEST})"
    assert found.entry is None


def test_the_manifest_on_a_usr_partition_is_found(tmp_path: Path) -> None:
    root = images.filesystem(
        images.root_tree(tmp_path / "r", "other", prefix="/srv"), "ext4", tmp_path / "root.img"
    )
    usr = images.filesystem(
        images.root_tree(tmp_path / "u", "on-usr", prefix="/share/osbake"),
        "btrfs",
        tmp_path / "usr.img",
    )
    disk = images.disk([(images.ROOT_TYPE, root), (images.USR_TYPE, usr)], tmp_path / "d.raw")
    found = image_files.read_file(disk, MANIFEST)
    assert (found.partition, found.filesystem) == (2, "btrfs")
    assert json.loads(found.data)["name"] == "on-usr"


def test_a_disk_without_partition_table_and_an_mbr_disk(tmp_path: Path) -> None:
    bare = images.filesystem(images.root_tree(tmp_path / "a", "bare"), "ext4", tmp_path / "a.img")
    assert inspect_artifact(bare).manifest.name == "bare"
    fs = images.filesystem(images.root_tree(tmp_path / "b", "mbr"), "ext4", tmp_path / "b.img")
    disk = images.disk([(images.ROOT_TYPE, fs)], tmp_path / "mbr.raw")
    subprocess.run(["sfdisk", "-q", "--delete", str(disk)], check=True)
    subprocess.run(
        ["sfdisk", "-q", "-X", "dos", str(disk)], input=b"start=2048, type=83\n", check=True
    )
    found = image_files.read_file(disk, MANIFEST)
    assert (found.partition, json.loads(found.data)["name"]) == (1, "mbr")


def osbake_cli(
    *argv: str | Path, user: str | None = None, tmpdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups"] if user else []
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HOME": "/nonexistent"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "osbake", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )


def test_recipe_of_a_renamed_image_as_an_unprivileged_user(raw_disk: Path) -> None:
    """`osbake inspect IMAGE --recipe > recipe.yaml`, as nobody when the tests run as root."""
    user = str(pwd.getpwnam("nobody").pw_uid) if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="inspect-user-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        image = images.convert(raw_disk, "qcow2", folder / "download.img")
        image.chmod(0o644)
        scratch = folder / "tmp"
        scratch.mkdir()
        if user is not None:
            os.chown(scratch, int(user), int(user))
        result = osbake_cli("inspect", image, "--recipe", user=user, tmpdir=scratch)
        assert result.returncode == 0, result.stderr
        recipe = yaml.safe_load(result.stdout)
        assert recipe["name"].startswith("tiny-") and recipe["release"] == "bookworm"
        assert recipe["files"] == images.RECIPE["files"]
        assert "the recipe copies files that are not in the image's manifest: files/motd" in (
            " ".join(result.stderr.split())
        )
        assert sorted(p.name for p in folder.iterdir()) == ["download.img", "tmp"]
        assert list(scratch.iterdir()) == []  # its temporary folder is gone
    finally:
        shutil.rmtree(folder)


# -- images that are not osbake's, or are crafted -----------------------------------------


def test_a_disk_without_a_manifest_says_so(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    fs = images.filesystem(tree, "ext4", tmp_path / "fs.img")
    disk = images.disk([(images.ROOT_TYPE, fs)], tmp_path / "plain.qcow2.raw")
    qcow2 = images.convert(disk, "qcow2", tmp_path / "plain.qcow2")
    result = osbake_cli("inspect", qcow2)
    assert result.returncode == 2
    assert f"has no {MANIFEST}: looked in partition 1 (ext4)" in result.stderr
    assert "hint: was it built by osbake?" in result.stderr


def test_a_file_that_is_no_image_says_what_osbake_reads(tmp_path: Path) -> None:
    junk = tmp_path / "notes.bin"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(ArtifactError, match="cannot read one from inside this kind of file") as e:
        inspect_artifact(junk)
    assert "raw, qcow2, vmdk, vhd, vhdx, raw.tar.*" in str(e.value.hint)


def test_a_partition_that_is_no_file_system(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(os.urandom(1 << 20))
    disk = images.disk([(images.ROOT_TYPE, garbage)], tmp_path / "d.raw")
    with pytest.raises(ArtifactError, match=r"looked in partition 1 \(no known file system\)"):
        inspect_artifact(disk)


def test_a_damaged_ext4_is_a_clear_error(tmp_path: Path) -> None:
    fs = images.filesystem(images.root_tree(tmp_path), "ext4", tmp_path / "fs.img")
    with fs.open("r+b") as handle:  # keep the superblock, break what follows it
        handle.seek(2048)
        handle.write(os.urandom((1 << 20) - 2048))
    disk = images.disk([(images.ROOT_TYPE, fs)], tmp_path / "d.raw")
    with pytest.raises(ArtifactError, match="debugfs could not read") as e:
        inspect_artifact(disk)
    assert "damaged" in str(e.value.hint)


@pytest.mark.parametrize("fs", ["ext4", "btrfs"])
def test_a_symlinked_manifest_never_reads_the_host(tmp_path: Path, fs: str) -> None:
    """manifest.json -> /etc/passwd: resolved inside the image (where there is none) or not
    followed at all; the host's file is never read."""
    tree = images.root_tree(tmp_path)
    target = tree / IN_IMAGE_DIR.lstrip("/") / "manifest.json"
    target.unlink()
    target.symlink_to("/etc/passwd")
    disk = images.disk(
        [(images.ROOT_TYPE, images.filesystem(tree, fs, tmp_path / "f.img"))], tmp_path / "d.raw"
    )
    with pytest.raises(ArtifactError, match=f"has no {MANIFEST}") as e:
        inspect_artifact(disk)
    assert "root:" not in str(e.value)


def test_a_vmdk_descriptor_naming_a_host_file_is_refused(tmp_path: Path) -> None:
    descriptor = tmp_path / "evil.vmdk"
    descriptor.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 8 FLAT "/etc/passwd" 0\n'
    )
    with pytest.raises(ArtifactError, match="vmdk descriptor: its data is in other files"):
        inspect_artifact(descriptor)


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk"])
def test_an_overlay_on_a_backing_file_is_refused(tmp_path: Path, fmt: str) -> None:
    base = tmp_path / f"base.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(base), "1M"], check=True)
    overlay = tmp_path / f"overlay.{fmt}"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", fmt, "-b", str(base), "-F", fmt, str(overlay)],
        check=True,
    )
    with pytest.raises(ArtifactError, match=r"backing file|refers to other files"):
        inspect_artifact(overlay)


def test_what_is_copied_and_read_is_bounded(raw_disk: Path, tmp_path: Path) -> None:
    qcow2 = images.convert(raw_disk, "qcow2", tmp_path / "d.qcow2")
    with pytest.raises(ArtifactError, match="holds more than"):
        image_files.read_file(qcow2, MANIFEST, image_files.Limits(data=4096))
    with pytest.raises(ArtifactError, match=r"larger than 64 bytes"):
        image_files.read_file(raw_disk, MANIFEST, image_files.Limits(file=64))


def test_a_partition_past_the_end_of_the_disk_is_not_read(tmp_path: Path) -> None:
    fs = images.filesystem(images.root_tree(tmp_path), "ext4", tmp_path / "fs.img")
    disk = images.disk([(images.ROOT_TYPE, fs)], tmp_path / "d.raw")
    os.truncate(disk, 4 << 20)  # the table says 16 MiB
    with pytest.raises(ArtifactError, match="has no Linux partition"):
        inspect_artifact(disk)


def test_a_qcow2_claiming_an_enormous_disk_is_refused(tmp_path: Path) -> None:
    qcow2 = tmp_path / "huge.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "1M"], check=True)
    with qcow2.open("r+b") as handle:  # virtual size (offset 24): 2^62 bytes
        handle.seek(24)
        handle.write((1 << 62).to_bytes(8, "big"))
    with pytest.raises(ArtifactError, match="claims a disk of 4611686018427387904 bytes"):
        inspect_artifact(qcow2)
    with qcow2.open("r+b") as handle:  # L1 size (offset 36): 2^31 entries
        handle.seek(24)
        handle.write((1 << 20).to_bytes(8, "big"))
        handle.seek(36)
        handle.write((1 << 31).to_bytes(4, "big"))
    with pytest.raises(ArtifactError, match=r"\(2147483648 entries\) is larger than QEMU"):
        inspect_artifact(qcow2)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_the_manifest_on_an_lvm_volume_is_found(tmp_path: Path, fmt: str) -> None:
    """The root on logical volume vg0/root, after a volume without a file system: the
    physical volume's own metadata says where each volume is (read without lvm tools)."""
    from osbake.disk import lvm

    mib = 1024**2
    fs = images.filesystem(images.root_tree(tmp_path / "t", "on-lvm"), "ext4", tmp_path / "fs.img")
    extents = -(-fs.stat().st_size // (4 * mib))
    group = lvm.Group(
        name="vg0",
        id=lvm.lvm_id("vg"),
        pv_id=lvm.lvm_id("pv"),
        pv_size=lvm.PE_START + (extents + 1) * 4 * mib,
        extent_size=4 * mib,
        volumes=[
            lvm.Volume("swap", lvm.lvm_id("swap"), 0, 1),
            lvm.Volume("root", lvm.lvm_id("root"), 1, extents),
        ],
    )
    pv = tmp_path / "pv.img"
    pv.write_bytes(b"")
    os.truncate(pv, group.pv_size)
    lvm.write_pv(pv, 0, group, "/dev/vda2")
    with pv.open("r+b") as handle:
        handle.seek(group.volume_offset("root"))
        handle.write(fs.read_bytes())
    raw = images.disk([(images.ESP_TYPE, None), (LVM_TYPE, pv)], tmp_path / "lvm.raw")
    image = raw if fmt == "raw" else images.convert(raw, fmt, tmp_path / "lvm.img")
    found = image_files.read_file(image, MANIFEST)
    assert (found.partition, found.volume, found.filesystem) == (2, "vg0/root", "ext4")
    inspected = inspect_artifact(image)
    assert inspected.manifest.name == "on-lvm"
    assert inspected.source == f"inside {image.name} (partition 2, LVM vg0/root, ext4: {MANIFEST})"
