"""The step cache: exact invalidation, reuse, and safety when a build is killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbake.manifest import file_sha256, load_manifest

pytestmark = pytest.mark.e2e

RECIPE = """\
name: cachetest
options:
  debian: {variant: apt}
elements: [marker]
packages: [less]
outputs: [tar]
"""


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A step cache of this module's own: what earlier runs left in the shared one (the
    same keys, when the code is the same) must not decide what these builds run. The
    second test reuses the first one's steps, as the comments there say."""
    folder = tmp_path_factory.mktemp("own-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OSBAKE_CACHE_DIR", str(folder))
        yield folder


def build(recipe: Path, out: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "osbake", "build", str(recipe), "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return {e["name"]: e["status"] for e in events if e["event"] == "result"}


def marker(out: Path) -> str:
    return subprocess.run(
        ["tar", "-xOf", str(out / "cachetest.tar.zst"), "./etc/marker"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    folder = tmp_path / "elements" / "marker" / "finalise"
    folder.mkdir(parents=True)
    (tmp_path / "elements" / "marker" / "element.yaml").write_text("description: test\n")
    script = folder / "50-marker"
    script.write_text("#!/bin/sh\necho one > /etc/marker\n")
    script.chmod(0o755)
    path = tmp_path / "cachetest.yaml"
    path.write_text(RECIPE)
    return path


def set_marker(recipe: Path, word: str) -> None:
    script = recipe.parent / "elements" / "marker" / "finalise" / "50-marker"
    script.write_text(f"#!/bin/sh\necho {word} > /etc/marker\n")


def test_invalidation_is_exact_and_old_results_come_back(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(recipe, out)
    assert marker(out) == "one\n"
    first = file_sha256(out / "cachetest.tar.zst")

    set_marker(recipe, "two")
    statuses = build(recipe, out)
    assert marker(out) == "two\n"
    assert statuses["post-install"] == "cached"
    assert statuses["finalise"] == "done"
    assert statuses["output:tar"] == "done"

    set_marker(recipe, "one")
    statuses = build(recipe, out)
    assert set(statuses.values()) == {"cached"}
    assert marker(out) == "one\n"
    assert file_sha256(out / "cachetest.tar.zst") == first
    manifest = load_manifest(out / "cachetest.manifest.json")
    assert manifest.artifacts[0].sha256 == first
    assert all(step.status == "cached" for step in manifest.steps)


def test_sigkill_during_a_cache_write_then_a_correct_build(recipe: Path, tmp_path: Path) -> None:
    recipe.write_text(RECIPE.replace("[less]", "[less, file]"))  # keys of its own
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "osbake", "build", str(recipe), "-o", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        # The recipe-packages step writes its layer into the cache while apt installs
        # (the elements' packages step is cached from the first test: same packages).
        if event["event"] == "command" and "apt-get" in event["line"]:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    statuses = build(recipe, out)
    assert statuses["recipe-packages"] == "done"  # the killed write was not used
    listing = subprocess.run(
        ["tar", "-tf", str(out / "cachetest.tar.zst")], capture_output=True, text=True, check=True
    ).stdout
    assert "./usr/bin/file" in listing.split()
    assert "./usr/bin/less" in listing.split()
    assert marker(out) == "one\n"
