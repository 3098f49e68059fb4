"""From a renamed disk image back to its recipe, and the recipe builds it again.

The qcow2 of examples/debian-cloud.yaml (the run's shared build) is copied away from
its manifest under another name; `osbake inspect --recipe` reads the recipe from the
root file system inside it, and a build of that recipe takes every step from the
step cache the shared build filled and gives a qcow2 with the same sha256.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from osbake.manifest import file_sha256, load_manifest
from tests.conftest import ImageBuilds

pytestmark = pytest.mark.e2e


def osbake(*argv: str | Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def shared(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml")


def test_a_renamed_qcow2_leads_back_to_a_recipe_that_rebuilds_it_from_the_cache(
    tmp_path: Path, shared: Path
) -> None:
    original = load_manifest(shared / "debian-cloud.manifest.json")
    downloaded = tmp_path / "downloads" / "some-image.img"
    downloaded.parent.mkdir()
    os.link(shared / "debian-cloud.qcow2", downloaded)  # no manifest beside it

    printed = osbake("inspect", downloaded, "--recipe", timeout=300)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("name: debian-cloud\n")
    assert yaml.safe_load(printed.stdout) == original.recipe
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(printed.stdout)

    out = tmp_path / "out"
    built = osbake("build", recipe, "-o", out, "--json")
    assert built.returncode == 0, built.stderr[-3000:]
    events = [json.loads(line) for line in built.stdout.splitlines()]
    statuses = {e["name"]: e["status"] for e in events if e["event"] == "result"}
    assert statuses and set(statuses.values()) == {"cached"}, statuses
    again = load_manifest(out / "debian-cloud.manifest.json")
    assert [s.key for s in again.steps] == [s.key for s in original.steps]
    assert file_sha256(out / "debian-cloud.qcow2") == file_sha256(downloaded)
