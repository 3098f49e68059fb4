"""`osbake diff` between two real builds that differ by one package shows that package.

The example minimal image is built once for the run (shared); a copy of its recipe
with one more package (`hello`, which needs nothing the image lacks) is built beside
it. The diff of the two tarballs names exactly `hello` among the packages and its
files among the files; the OCI images give the same package diff.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, ImageBuilds

pytestmark = pytest.mark.e2e


def osbake(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )


@pytest.fixture(scope="module")
def two_builds(
    image_builds: ImageBuilds, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    old = image_builds.build("debian-minimal.yaml")
    folder = tmp_path_factory.mktemp("plus-hello")
    shutil.copytree(EXAMPLES / "files", folder / "files")
    recipe = yaml.safe_load((EXAMPLES / "debian-minimal.yaml").read_text())
    recipe["packages"] = [*recipe["packages"], "hello"]
    (folder / "debian-minimal.yaml").write_text(yaml.safe_dump(recipe))
    out = folder / "out"
    built = osbake("build", folder / "debian-minimal.yaml", "-o", out)
    assert built.returncode == 0, built.stderr[-3000:]
    return old, out


def test_the_diff_of_two_tarballs_is_one_package_and_its_files(
    two_builds: tuple[Path, Path],
) -> None:
    old, new = two_builds
    result = osbake(
        "diff", "--json", old / "debian-minimal.tar.zst", new / "debian-minimal.tar.zst"
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [p["name"] for p in payload["packages"]["added"]] == ["hello"]
    assert payload["packages"]["removed"] == [] and payload["packages"]["changed"] == []
    assert payload["recipe_keys"] == ["packages"]
    added = {f["path"] for f in payload["files"] if f["what"] == "added"}
    assert "/usr/bin/hello" in added
    # Everything else that changed is the package's files and dpkg's, apt's and
    # ldconfig's records of it.
    changed = [f["path"] for f in payload["files"]]
    assert all(path.startswith(("/usr/", "/var/", "/etc/")) for path in changed), changed
    text = osbake("diff", old / "debian-minimal.tar.zst", new / "debian-minimal.tar.zst").stdout
    assert "packages: 1 added, 0 removed, 0 upgraded, 0 downgraded" in text
    assert "  + hello " in text and "+ /usr/bin/hello" in text


def test_the_diff_of_two_oci_images(
    two_builds: tuple[Path, Path],
) -> None:
    old, new = two_builds
    result = osbake(
        "diff", "--json", old / "debian-minimal.oci.tar", new / "debian-minimal.oci.tar"
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [p["name"] for p in payload["packages"]["added"]] == ["hello"]
    assert payload["files"] is None
    same = osbake(
        "diff",
        "--exit-code",
        old / "debian-minimal.manifest.json",
        old / "debian-minimal.manifest.json",
    )
    assert same.returncode == 0 and "no differences" in same.stdout
