"""Two builds of one recipe from one mirror state give the same bytes.

debian-minimal is built twice with --no-cache (every step run, nothing taken from or
put into the cache): its root tarball, OCI image and SBOM have the same sha256, and
the same as the run's shared build (whose steps may come from the cache). The cloud
example is rebuilt from its image with `osbake rebuild` (a --no-cache build in a folder
of its own): every disk output it makes has the same sha256 as the shared build's, and
`rebuild` says so. Each disk format's header pinning is also checked on its own
(tests/integration/test_pinning.py).
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


def test_the_cloud_image_built_again_without_the_cache_is_bit_identical(
    tmp_path: Path, image_builds: ImageBuilds
) -> None:
    shared = image_builds.build("debian-cloud.yaml")
    again = tmp_path / "again"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "osbake",
            "rebuild",
            str(shared / "debian-cloud.qcow2"),
            "-o",
            str(again),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=2400,
    )
    original = load_manifest(shared / "debian-cloud.manifest.json")
    rebuilt = load_manifest(again / "debian-cloud.manifest.json")
    formats = sorted(a.format for a in original.artifacts)
    assert formats == ["qcow2", "raw.tar.xz"]
    # Every output, read from the files themselves, not only from the manifests.
    first = {a.format: file_sha256(shared / a.file) for a in original.artifacts}
    second = {a.format: file_sha256(again / a.file) for a in rebuilt.artifacts}
    assert first == second, result.stdout
    assert {a.format: a.sha256 for a in original.artifacts} == first
    sbom = "debian-cloud.spdx.json"
    assert file_sha256(shared / sbom) == file_sha256(again / sbom)
    assert original.disk == rebuilt.disk
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert sorted(result.stdout.splitlines()) == [f"{fmt}: identical" for fmt in formats]
