"""`osbake diff`: what changed between two builds, for people and as JSON."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from osbake import diff
from osbake.cli import main
from osbake.errors import ArtifactError
from osbake.manifest import Manifest

MIB = 1 << 20


def manifest(**changes: Any) -> Manifest:
    packages = [
        {
            "name": "bash",
            "version": "5.2.15-2+b2",
            "arch": "amd64",
            "source": "bash",
            "source_version": "5.2.15-2",
        },
        {
            "name": "libc6",
            "version": "2.36-9+deb12u8",
            "arch": "amd64",
            "source": "glibc",
            "source_version": "2.36-9+deb12u8",
        },
        {
            "name": "tzdata",
            "version": "2024a-0+deb12u1",
            "arch": "all",
            "source": "tzdata",
            "source_version": "2024a-0+deb12u1",
        },
    ]
    base: dict[str, Any] = {
        "osbake_version": "0.1.0",
        "image": "demo",
        "name": "demo",
        "arch": "amd64",
        "distro": "debian",
        "release": "bookworm",
        "recipe": {"name": "demo", "release": "bookworm", "packages": ["bash"]},
        "recipe_sha256": "0" * 64,
        "elements": [{"name": "vm", "sha256": "a" * 64, "origin": "builtin"}],
        "packages": packages,
        "boot": ["bios", "uefi"],
        "cmdline": "console=ttyS0",
        "kernel": {"release": "6.1.0-26-cloud-amd64", "version": "6.1.112-1"},
        "disk": {
            "size": 2048 * MIB,
            "partitions": [
                {
                    "name": "esp",
                    "size": 127 * MIB,
                    "fs": "vfat",
                    "mount": "/boot/efi",
                    "type": "esp",
                    "free": 120 * MIB,
                },
                {
                    "name": "root",
                    "size": 1900 * MIB,
                    "fs": "ext4",
                    "mount": "/",
                    "type": "linux",
                    "free": 1000 * MIB,
                },
            ],
        },
        "artifacts": [
            {"file": "demo.qcow2", "format": "qcow2", "size": 400 * MIB, "sha256": "1" * 64}
        ],
    }
    base.update(changes)
    return Manifest.model_validate(base)


def write(tmp_path: Path, name: str, value: Manifest) -> Path:
    path = tmp_path / f"{name}.manifest.json"
    path.write_text(value.to_json())
    return path


def sides(a: Manifest, b: Manifest) -> diff.Diff:
    return diff.diff(diff.Side("a", a), diff.Side("b", b))


def test_the_same_manifest_has_no_differences() -> None:
    result = sides(manifest(), manifest())
    assert result.empty
    assert "no differences" in diff.render(result)


def test_one_added_package_is_exactly_that_package() -> None:
    old = manifest()
    new_packages = [*old.model_dump()["packages"]]
    new_packages.append(
        {
            "name": "htop",
            "version": "3.2.2-2",
            "arch": "amd64",
            "source": "htop",
            "source_version": "3.2.2-2",
        }
    )
    result = sides(old, manifest(packages=new_packages))
    assert [p.name for p in result.packages_added] == ["htop"]
    assert not result.packages_removed and not result.packages_changed
    text = diff.render(result)
    assert "packages: 1 added, 0 removed, 0 upgraded, 0 downgraded" in text
    assert "  + htop 3.2.2-2 (amd64)" in text


def test_upgrades_downgrades_removals_and_rebuilds() -> None:
    old = manifest()
    packages = old.model_dump()["packages"]
    packages[0]["version"] = "5.2.15-2+b7"  # bash upgraded (binNMU)
    packages[1]["version"] = "2.36-9+deb12u7"  # libc6 downgraded
    packages[2]["arch"] = "amd64"  # tzdata: same version, other arch
    result = sides(old, manifest(packages=packages))
    changes = {c.name: c.change for c in result.packages_changed}
    assert changes == {"bash": "upgraded", "libc6": "downgraded", "tzdata": "rebuilt"}
    removed = sides(old, manifest(packages=packages[:1]))
    assert [p.name for p in removed.packages_removed] == ["libc6", "tzdata"]


def test_kernel_boot_partitions_artifacts_and_recipe() -> None:
    old = manifest()
    disk = old.model_dump()["disk"]
    disk["partitions"][1]["size"] += 512 * MIB
    disk["partitions"][1]["fs"] = "btrfs"
    new = manifest(
        kernel={"release": "6.1.0-27-cloud-amd64", "version": "6.1.115-1"},
        boot=["bios"],
        disk=disk,
        recipe={"name": "demo", "release": "bookworm", "packages": ["bash", "htop"]},
        artifacts=[
            {"file": "demo.qcow2", "format": "qcow2", "size": 410 * MIB, "sha256": "2" * 64}
        ],
    )
    result = sides(old, new)
    assert ("release", "6.1.0-26-cloud-amd64", "6.1.0-27-cloud-amd64") in result.kernel
    assert ("boot", ["bios", "uefi"], ["bios"]) in result.fields
    assert ("root", "fs", "ext4", "btrfs") in result.partition_changes
    root = next(p for p in result.partitions if p.name == "root")
    assert root.delta == 512 * MIB
    assert result.recipe_keys == ["packages"]
    text = diff.render(result)
    assert "root: 1.9 GiB -> 2.4 GiB (+512.0 MiB)" in text
    assert "qcow2: 400.0 MiB -> 410.0 MiB (+10.0 MiB)" in text
    assert "partition root: fs ext4 -> btrfs" in text
    payload = result.to_json()
    assert json.loads(json.dumps(payload))["identical"] is False


# Each pair in dpkg's order (tests/integration/test_diff_dpkg.py asks dpkg itself).
VERSION_PAIRS = [
    ("1.0", "1.0-1"),
    ("1.0~rc1", "1.0"),
    ("1.0~rc1-1", "1.0-1"),
    ("2.0", "1:0.9"),
    ("2.36-9+deb12u7", "2.36-9+deb12u8"),
    ("5.2.15-2+b2", "5.2.15-2+b10"),
    ("1.0a", "1.0b"),
    ("1.0", "1.0a"),
    ("1.0+", "1.0."),
    ("1.2.3", "1.10"),
    ("0~", "0"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("2024a-0+deb12u1", "2024b-0+deb12u1"),
]


@pytest.mark.parametrize(("a", "b"), VERSION_PAIRS)
def test_versions_sort_as_dpkg_sorts_them(a: str, b: str) -> None:
    assert diff.compare_versions(a, b) == -1
    assert diff.compare_versions(b, a) == 1
    assert diff.compare_versions(a, a) == 0


def tarball(path: Path, files: dict[str, bytes], *, zstd: bool = False) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    payload = raw.getvalue()
    path.write_bytes(zstandard.ZstdCompressor().compress(payload) if zstd else payload)
    return path


def test_files_of_two_root_tarballs(tmp_path: Path) -> None:
    old = tarball(
        tmp_path / "old.tar.zst", {"etc/a": b"1", "etc/b": b"22", "usr/c": b"x"}, zstd=True
    )
    new = tarball(tmp_path / "new.tar", {"etc/a": b"1", "etc/b": b"2222", "usr/d": b"yy"})
    changes = {(c.path, c.what) for c in diff.diff_files(old, new)}
    assert changes == {("/etc/b", "size"), ("/usr/c", "removed"), ("/usr/d", "added")}


def test_the_cli_compares_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write(tmp_path, "old", manifest())
    new = write(tmp_path, "new", manifest(release="trixie"))
    assert main(["diff", str(old), str(new)]) == 0
    assert "release: bookworm -> trixie" in capsys.readouterr().out
    assert main(["diff", "--exit-code", str(old), str(new)]) == 1
    capsys.readouterr()
    assert main(["diff", "--exit-code", str(old), str(old)]) == 0
    capsys.readouterr()
    assert main(["diff", "--json", str(old), str(new)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["fields"] == [{"field": "release", "old": "bookworm", "new": "trixie"}]


@pytest.mark.parametrize(
    "content",
    [b"{", b'{"image": 1}', b"[]", b"\xff\xfe", b""],
)
def test_a_broken_manifest_is_a_clear_error(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "good", manifest())
    bad = tmp_path / "bad.manifest.json"
    bad.write_bytes(content)
    code = main(["diff", str(good), str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "is not an osbake manifest" in err and "Traceback" not in err


def test_missing_and_oversized_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        diff.read_side(tmp_path / "nope.manifest.json")
    with pytest.raises(ArtifactError, match="is not a file"):
        diff.read_side(tmp_path)
    huge = tmp_path / "huge.manifest.json"
    with huge.open("wb") as handle:
        handle.truncate(diff.MAX_MANIFEST_BYTES + 1)
    with pytest.raises(ArtifactError, match="larger than 64 MiB"):
        diff.read_side(huge)


def test_a_broken_tarball_is_a_clear_error(tmp_path: Path) -> None:
    good = tarball(tmp_path / "good.tar", {"a": b"1"})
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(b"not zstd at all")
    with pytest.raises(ArtifactError, match="cannot be read as a tarball"):
        diff.diff_files(good, bad)
