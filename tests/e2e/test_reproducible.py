"""Two builds of one recipe from one mirror state give the same bytes.

debian-minimal is built twice with --no-cache (every step run, nothing taken from or
put into the cache): its root tarball, OCI image and SBOM have the same sha256, and
the same as the run's shared build (whose steps may come from the cache). Disk images
are not covered yet (docs/manifest.md says what is).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from osbake.manifest import file_sha256, load_manifest
from tests.conftest import EXAMPLES, ImageBuilds

pytestmark = pytest.mark.e2e

FILES = ("debian-minimal.tar.zst", "debian-minimal.oci.tar", "debian-minimal.spdx.json")


def build(out: Path) -> dict[str, str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "osbake",
            "build",
            str(EXAMPLES / "debian-minimal.yaml"),
            "-o",
            str(out),
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: file_sha256(out / name) for name in FILES}


def test_two_uncached_builds_give_the_same_bytes(tmp_path: Path, image_builds: ImageBuilds) -> None:
    first = build(tmp_path / "one")
    second = build(tmp_path / "two")
    assert first == second
    shared = image_builds.build("debian-minimal.yaml")
    assert {name: file_sha256(shared / name) for name in FILES} == first
    # The manifests differ only in what they say about the build itself.
    one = load_manifest(tmp_path / "one" / "debian-minimal.manifest.json")
    two = load_manifest(tmp_path / "two" / "debian-minimal.manifest.json")
    assert one.artifacts == two.artifacts
    assert one.packages == two.packages and one.mirror == two.mirror
    listing = subprocess.run(
        ["tar", "-tf", str(tmp_path / "one" / "debian-minimal.tar.zst")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "./var/log/dpkg.log" not in listing and "./var/cache/ldconfig/aux-cache" not in listing


def test_rebuild_from_the_image_says_identical(image_builds: ImageBuilds) -> None:
    shared = image_builds.build("debian-minimal.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "osbake", "rebuild", str(shared / "debian-minimal.tar.zst")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.splitlines() == ["tar: identical", "oci: identical"]
