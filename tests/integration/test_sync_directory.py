"""`osbake sync` into a directory, as real processes over a (throttled) local HTTP server:
two syncs of one stream at the same time, a source file that is shorter or different than
the stream says, and filters anywhere on the command line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from osbake.publish import publish
from tests.publish_helpers import RangeHandler, http_server, make_build, osbake_sync_together

pytestmark = pytest.mark.integration

SIZE = 6 << 20
RATE = 2 << 20  # bytes per second: each download takes about 3 s
DISK = "demo/bookworm/amd64/20261120/demo.qcow2"


def osbake(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    manifest = make_build(tmp_path / "out", files={"demo.qcow2": ("qcow2", os.urandom(SIZE))})
    publish([manifest], tmp_path / "repo")
    return tmp_path / "repo"


def _leftovers(root: Path) -> list[str]:
    """Temporary files and item locks (the tree's own lock, like a publisher's, stays)."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.name.endswith((".partial", ".lock", ".raw")) or p.name.startswith(".stage-")
        if p.name != ".osbake-publish.lock"
    )


@pytest.mark.parametrize("stagger", [0.0, 1.0], ids=["together", "a-second-apart"])
def test_two_syncs_of_one_stream_into_one_directory(
    repo: Path, tmp_path: Path, stagger: float
) -> None:
    mirror = tmp_path / "mirror"
    cache = tmp_path / "cache"
    env = {**os.environ, "OSBAKE_CACHE_DIR": str(cache)}
    with http_server(repo, rate=RATE) as url:
        runs = osbake_sync_together([[url, str(mirror)], [url, str(mirror)]], env, stagger=stagger)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
        assert "2 items selected" in run.stdout
    # Exactly one intact copy, listed by the mirror's streams, nothing half-written.
    assert (mirror / DISK).read_bytes() == (repo / DISK).read_bytes()
    assert sorted(p.name for p in (mirror / DISK).parent.iterdir()) == [
        "demo.manifest.json",
        "demo.qcow2",
    ]
    assert _leftovers(mirror) == []
    products = json.loads((mirror / "streams/v1/org.osbake:daily:download.json").read_text())
    items = products["products"]["org.osbake:demo:bookworm:amd64"]["versions"]["20261120"]
    assert sorted(items["items"]) == ["disk1.img", "manifest"]
    # Each item was downloaded once: the sync that got its lock second waited for the
    # first and then found it there.
    transferred = [int(r.stdout.split(" transferred")[0].rsplit(" ", 1)[1]) for r in runs]
    assert sum(transferred) == 2
    assert any("waiting for another sync of demo.qcow2" in r.stderr for r in runs)


def test_a_source_file_shorter_than_the_stream_says_is_refused_not_resumed(
    repo: Path, tmp_path: Path
) -> None:
    disk = repo / DISK
    disk.write_bytes(disk.read_bytes()[: SIZE - 1000])  # complete on the server, but short
    mirror = tmp_path / "mirror"
    with http_server(repo) as url:
        for _ in range(2):  # the second run says the same, it does not try to resume
            RangeHandler.requests.clear()
            run = osbake("sync", url, str(mirror), "ftype=disk1.img")
            assert run.returncode == 4, run.stderr
            message = " ".join(run.stderr.split())
            assert f"the server's file is {SIZE - 1000} bytes, the stream says {SIZE}" in message
            assert "Traceback" not in run.stderr
            assert not [r for r in RangeHandler.requests if r[1]]  # no Range request
            assert not (mirror / DISK).exists()
            assert not list(mirror.rglob("*.partial"))
        # From a directory (no HTTP) it is the same refusal.
        run = osbake("sync", str(repo), str(mirror), "ftype=disk1.img")
        assert run.returncode == 4, run.stderr
        assert "the stream says" in run.stderr


def test_a_source_file_different_from_the_stream_is_refused_every_time(
    repo: Path, tmp_path: Path
) -> None:
    disk = repo / DISK
    data = bytearray(disk.read_bytes())
    data[SIZE // 2] ^= 0xFF
    disk.write_bytes(bytes(data))
    mirror = tmp_path / "mirror"
    with http_server(repo) as url:
        for _ in range(2):
            run = osbake("sync", url, str(mirror), "ftype=disk1.img")
            assert run.returncode == 4, run.stderr
            assert "demo.qcow2: checksum mismatch, refused" in run.stderr
            assert not list(mirror.rglob("*demo.qcow2*"))


def test_a_short_partial_left_by_a_longer_server_file_is_not_resumed_for_ever(
    repo: Path, tmp_path: Path
) -> None:
    """A partial as long as the server's file (the server's is short): exit 4, not a loop."""
    disk = repo / DISK
    short = disk.read_bytes()[: SIZE // 2]
    disk.write_bytes(short)
    mirror = tmp_path / "mirror"
    (mirror / DISK).parent.mkdir(parents=True)
    (mirror / DISK).with_name(".demo.qcow2.partial").write_bytes(short)
    with http_server(repo) as url:
        run = osbake("sync", url, str(mirror), "ftype=disk1.img")
    assert run.returncode == 4, run.stderr
    assert f"the server's file is {SIZE // 2} bytes, the stream says {SIZE}" in " ".join(
        run.stderr.split()
    )
    assert not list(mirror.rglob("*.partial"))


@pytest.mark.parametrize(
    "argv",
    [
        ["URL", "MIRROR", "ftype=disk1.img", "--max", "1"],
        ["URL", "MIRROR", "--max", "1", "ftype=disk1.img"],
        ["--max", "1", "URL", "MIRROR", "ftype=disk1.img"],
        ["URL", "--jobs", "2", "MIRROR", "--max", "1", "ftype=disk1.img", "--json"],
        ["URL", "MIRROR", "ftype!=manifest", "--max", "1", "path~qcow2$"],
    ],
    ids=["filters-last", "filters-after-options", "options-first", "mixed", "two-filters"],
)
def test_filters_may_stand_anywhere(repo: Path, tmp_path: Path, argv: list[str]) -> None:
    mirror = tmp_path / "mirror"
    with http_server(repo) as url:
        run = osbake("sync", *[{"URL": url, "MIRROR": str(mirror)}.get(a, a) for a in argv])
    assert run.returncode == 0, run.stderr
    files = sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("demo.*"))
    assert files == [DISK]
    assert (
        hashlib.sha256((mirror / DISK).read_bytes()).hexdigest()
        == hashlib.sha256((repo / DISK).read_bytes()).hexdigest()
    )
