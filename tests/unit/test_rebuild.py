"""`osbake rebuild`: the recipe written back from a manifest, the mirror's changes, the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from osbake import rebuild
from osbake.errors import ArtifactError, UsageError
from osbake.manifest import Manifest, MirrorEntry


def manifest(tmp_path: Path, **changes: Any) -> Manifest:
    source = tmp_path / "source"
    (source / "files").mkdir(parents=True, exist_ok=True)
    (source / "files" / "motd").write_text("hello\n")
    (source / "demo.yaml").write_text("name: demo\n")
    data: dict[str, Any] = {
        "osbake_version": "0.1.0",
        "image": "demo",
        "name": "demo",
        "arch": "amd64",
        "distro": "debian",
        "release": "bookworm",
        "recipe": {
            "name": "demo",
            "release": "bookworm",
            "mirror": None,
            "files": [{"src": "files/motd", "dest": "/etc/motd"}],
            "outputs": ["tar"],
        },
        "recipe_sha256": "0" * 64,
        "recipe_file": str(source / "demo.yaml"),
        "artifacts": [
            {"file": "demo.tar.zst", "format": "tar", "size": 1, "sha256": "a" * 64},
            {"file": "demo.oci.tar", "format": "oci", "size": 1, "sha256": "b" * 64},
        ],
    }
    data.update(changes)
    return Manifest.model_validate(data)


def test_the_recipe_and_its_files_are_written_back(tmp_path: Path) -> None:
    prepared = rebuild.prepare(manifest(tmp_path), tmp_path / "work")
    recipe = yaml.safe_load(prepared.recipe.read_text())
    assert recipe["name"] == "demo" and recipe["mirror"] is None
    assert (tmp_path / "work" / "files" / "motd").read_text() == "hello\n"
    assert prepared.arch == "amd64" and prepared.notes == []


def test_a_mirror_override_is_checked_and_noted(tmp_path: Path) -> None:
    prepared = rebuild.prepare(
        manifest(tmp_path),
        tmp_path / "work",
        mirror="http://snapshot.invalid/archive/debian/20261129T000000Z",
    )
    assert yaml.safe_load(prepared.recipe.read_text())["mirror"].startswith("http://snapshot")
    assert prepared.notes
    with pytest.raises(UsageError, match="--mirror"):
        rebuild.prepare(manifest(tmp_path), tmp_path / "w2", mirror="not a url\n")


def test_files_without_their_folder_need_source(tmp_path: Path) -> None:
    gone = manifest(tmp_path, recipe_file=str(tmp_path / "gone" / "demo.yaml"))
    with pytest.raises(UsageError, match="--source"):
        rebuild.prepare(gone, tmp_path / "work")
    prepared = rebuild.prepare(gone, tmp_path / "work", source=tmp_path / "source")
    assert (prepared.recipe.parent / "files" / "motd").is_file()


def test_a_file_outside_the_source_folder_is_refused(tmp_path: Path) -> None:
    hostile = manifest(tmp_path)
    hostile.recipe["files"] = [{"src": "../../etc/hostname", "dest": "/etc/x"}]
    with pytest.raises(ArtifactError, match="leaves the recipe's folder"):
        rebuild.prepare(hostile, tmp_path / "a" / "work")
    assert not (tmp_path / "etc").exists()  # not even a folder made outside
    hostile.recipe["files"] = [{"src": "/etc/hostname", "dest": "/etc/x"}]
    with pytest.raises(ArtifactError, match="must be a path relative"):
        rebuild.prepare(hostile, tmp_path / "b" / "work")
    hostile.recipe["files"] = [{"src": {"not": "a path"}, "dest": "/etc/x"}]
    with pytest.raises(ArtifactError, match="a file the recipe copies"):
        rebuild.prepare(hostile, tmp_path / "c" / "work")


def test_mirror_changes() -> None:
    recorded = [
        MirrorEntry(source="m bookworm", sha256="1", date="then"),
        MirrorEntry(source="m bookworm-updates", sha256="2", date="then"),
    ]
    same = {"m bookworm": {"sha256": "1", "date": "then"}, "m bookworm-updates": {"sha256": "2"}}
    assert rebuild.mirror_changes(recorded, same) == []
    moved = {"m bookworm": {"sha256": "1"}, "m bookworm-updates": {"sha256": "3", "date": "now"}}
    assert rebuild.mirror_changes(recorded, moved) == [
        "m bookworm-updates: Release of then then, now now"
    ]


def test_the_verdict(tmp_path: Path) -> None:
    original = manifest(tmp_path)
    again = manifest(
        tmp_path,
        artifacts=[{"file": "demo.tar.zst", "format": "tar", "size": 1, "sha256": "a" * 64}],
    )
    result = rebuild.compare(original, again)
    assert result.identical == ["tar"] and result.missing == ["oci"] and result.different == []
    changed = manifest(
        tmp_path,
        artifacts=[
            {"file": "demo.tar.zst", "format": "tar", "size": 2, "sha256": "c" * 64},
            {"file": "demo.oci.tar", "format": "oci", "size": 1, "sha256": "b" * 64},
        ],
    )
    result = rebuild.compare(original, changed)
    assert result.different == ["tar"] and result.identical == ["oci"]


def test_a_variant_image_is_built_as_that_variant(tmp_path: Path) -> None:
    """The merged recipe keeps an empty variant of the image's: built with --variant, the
    image has the same name, variant and step keys as the original."""
    original = manifest(tmp_path, variant="generic", image="demo-generic")
    recipe = rebuild.recipe_of(original)
    assert recipe["variants"] == {"generic": {}}
    assert rebuild.build_options(original) == ["--variant", "generic"]
    prepared = rebuild.prepare(original, tmp_path / "work")
    assert prepared.variant == "generic"
    assert yaml.safe_load(prepared.recipe.read_text())["variants"] == {"generic": {}}


def test_the_arch_is_named_when_the_recipe_has_several() -> None:
    data = {
        "osbake_version": "0.1.0",
        "image": "demo-arm64",
        "name": "demo",
        "arch": "arm64",
        "distro": "debian",
        "release": "bookworm",
        "recipe": {"name": "demo", "arch": ["amd64", "arm64"], "variants": {"x": {}}},
        "recipe_sha256": "0" * 64,
    }
    several = Manifest.model_validate(data)
    assert rebuild.build_options(several) == ["--arch", "arm64"]
    assert "variants" not in rebuild.recipe_of(several)
    assert rebuild.outside_recipe(several) == ([], [])
