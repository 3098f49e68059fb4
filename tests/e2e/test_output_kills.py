"""A build SIGKILLed during any output step leaves nothing partial after the next build.

One recipe (the cloud image) asks for every output format. Its tree and disk come
from the step cache; the output steps' cache entries are dropped, so each run
really writes its outputs. Run k is killed while output k is being written (its
partial file is in the output folder, its step has not ended); run k+1 first
removes what run k left, finishes output k, and is killed in output k+1. The last
run completes: the folder then holds the artifacts and the manifest, nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from osbake.cache import Store
from osbake.manifest import file_sha256, load_manifest
from osbake.outputs import get_output
from osbake.plan import StepKind, resolve_plan
from osbake.recipe import OutputFormat, load
from osbake.settings import Settings
from osbake.workspace import partial_name
from tests.conftest import EXAMPLES, ImageBuilds

pytestmark = pytest.mark.e2e

# Every format of the cloud image once (tar and tar.zst are one file, .tar.zst). The live
# ISO needs a recipe of its own (the live element, no disk outputs): not in this one.
FORMATS = [str(f) for f in OutputFormat if f not in (OutputFormat.TAR_ZST, OutputFormat.ISO)]
STEP_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def recipe(image_builds: ImageBuilds, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image_builds.build("debian-cloud.yaml")  # the tree and the disk, shared with other tests
    data = yaml.safe_load((EXAMPLES / "debian-cloud.yaml").read_text())
    data["outputs"] = FORMATS
    data.pop("variants", None)
    path = tmp_path_factory.mktemp("recipe") / "debian-cloud.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def drop_cached_outputs(recipe: Path) -> None:
    plan = resolve_plan(load(recipe))
    keys = {s.key for s in plan.steps if s.kind == StepKind.OUTPUT}
    store = Store(Settings.from_environment().store_dir)
    for entry in store.entries():
        if entry.key in keys:
            shutil.rmtree(entry.path)


class Run:
    """`osbake build --json` in the background, its events read as they come."""

    def __init__(self, recipe: Path, outdir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "osbake", "build", str(recipe), "-o", str(outdir), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "step":
                self.started.add(event["name"])
            elif event.get("event") == "result":
                self.ended.add(event["name"])

    def finish(self) -> tuple[int, str]:
        _, stderr = self.proc.communicate(timeout=STEP_TIMEOUT)
        self.reader.join(timeout=10)
        return self.proc.returncode, stderr


def partials(outdir: Path) -> list[str]:
    return sorted(p.name for p in outdir.iterdir() if p.name.endswith(".partial"))


def own_files(outdir: Path) -> list[str]:
    return sorted(p.name for p in outdir.iterdir() if p.name.startswith(".osbake-"))


def kill_during(recipe: Path, outdir: Path, fmt: str) -> list[str]:
    """Start a build, SIGKILL it while `fmt` is being written; return its partials."""
    step = f"output:{fmt}"
    suffix = get_output(OutputFormat(fmt)).suffix
    mine = re.compile(
        re.escape(partial_name(f"debian-cloud{suffix}", "@")).replace("@", "[0-9a-f]{16}")
    )
    run = Run(recipe, outdir)
    deadline = time.monotonic() + STEP_TIMEOUT
    try:
        while True:
            assert run.proc.poll() is None, f"the build ended before {step}: {run.finish()}"
            assert time.monotonic() < deadline, f"{step} did not start"
            writing = any(mine.match(n) for n in partials(outdir))
            if step in run.started and writing:
                break
            time.sleep(0.01)
        os.kill(run.proc.pid, signal.SIGKILL)
        assert step not in run.ended, f"{step} had ended before the kill"
    finally:
        run.proc.kill()
        run.finish()
    return partials(outdir)


def test_killed_output_steps_leave_nothing_partial(recipe: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "notes.txt").write_text("not osbake's")
    drop_cached_outputs(recipe)
    left: list[str] = []
    for fmt in FORMATS:
        now = kill_during(recipe, outdir, fmt)
        # The kill left this run's partials (and its lock); the previous run's are gone.
        assert now, f"nothing partial after killing the build in output:{fmt}"
        assert not set(left) & set(now), f"partials of the run before stayed: {left}"
        assert len(own_files(outdir)) == 1, own_files(outdir)
        left = now
    result = subprocess.run(
        [sys.executable, "-m", "osbake", "build", str(recipe), "-o", str(outdir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=STEP_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert partials(outdir) == [] and own_files(outdir) == []
    manifest = load_manifest(outdir / "debian-cloud.manifest.json")
    files = {a.file: a for a in manifest.artifacts}
    assert len(files) == len(FORMATS)
    expected = {*files, "debian-cloud.manifest.json", "debian-cloud.spdx.json", "notes.txt"}
    assert {p.name for p in outdir.iterdir()} == expected
    for name, artifact in files.items():
        assert file_sha256(outdir / name) == artifact.sha256
