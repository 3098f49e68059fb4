"""`osbake sync` into a real Glance API server (Debian's glance-api: SQLite, file store,
no Keystone), started once for this module and stopped after it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from osbake.publish import publish
from tests.publish_helpers import (
    gpg_key,
    http_server,
    make_build,
    osbake_sync_together,
    throttled_proxy,
)

pytestmark = pytest.mark.integration


def _connect(clouds: Path):  # type: ignore[no-untyped-def]
    import openstack

    os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    return openstack.connect(cloud="testglance")


def test_sync_into_glance_uploads_once_with_properties_and_checksum(
    glance: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 256k", str(disk)],
        check=True,
        capture_output=True,
    )
    content = disk.read_bytes()
    manifest = make_build(
        tmp_path / "out",
        name="cloudy",
        files={"cloudy.qcow2": ("qcow2", content), "cloudy.tar.zst": ("tar.zst", b"root")},
    )
    publish([manifest], tmp_path / "repo")
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(glance)}

    with http_server(tmp_path / "repo") as url:
        argv = [sys.executable, "-m", "osbake", "sync", url, "glance:testglance"]
        first = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert first.returncode == 0, first.stderr
        assert "1 items selected, 1 transferred" in first.stdout  # only the disk, not the tar
        second = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert second.returncode == 0, second.stderr
        assert "1 items selected, 0 transferred" in second.stdout

    conn = _connect(glance)
    images = [
        i
        for i in conn.image.images()
        if i.properties.get("product_name") == "org.osbake:cloudy:bookworm:amd64"
    ]
    assert len(images) == 1
    image = images[0]
    assert image.name == "cloudy-bookworm-amd64-20261120"
    assert image.status == "active"
    assert image.disk_format == "qcow2"
    assert image.checksum == hashlib.md5(content).hexdigest()
    assert image.hash_algo == "sha512"
    assert image.hash_value == hashlib.sha512(content).hexdigest()
    props = image.properties
    assert props["version_name"] == "20261120"
    assert props["item_name"] == "disk1.img"
    assert image.architecture == "x86_64"
    assert props["simplestreams_label"] == "daily"
    assert props["source_sha256"] == hashlib.sha256(content).hexdigest()
    assert image.os_distro == "debian"
    assert image.os_version == "12"


# -- integrity under concurrency and faults --------------------------------------------------

RATE = 1 << 20  # bytes per second


def _port(clouds: Path) -> int:
    return int(clouds.read_text().split("http://127.0.0.1:")[1].split()[0])


def _clouds(path: Path, port: int, name: str = "testglance") -> Path:
    path.write_text(
        f"clouds:\n  {name}:\n    auth_type: none\n"
        f"    auth:\n      endpoint: http://127.0.0.1:{port}\n"
    )
    return path


def _qcow2(path: Path, mib: int) -> bytes:
    """A real qcow2 with `mib` MiB of data (Glance checks what it is given)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x{mib:02x} 1M {mib}M", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_bytes()


def _published(tmp_path: Path, name: str, mib: int = 4) -> bytes:
    content = _qcow2(tmp_path / "disk.qcow2", mib)
    manifest = make_build(tmp_path / "out", name=name, files={f"{name}.qcow2": ("qcow2", content)})
    publish([manifest], tmp_path / "repo")
    return content


def _images_of(clouds: Path, name: str) -> list[Any]:
    """The images of the stream's product `name` (found by the property, whatever their name)."""
    product = f"org.osbake:{name}:bookworm:amd64"
    images = _connect(clouds).image.images()
    return [i for i in images if (i.properties or {}).get("product_name") == product]


def _assert_one_intact_image(clouds: Path, name: str, content: bytes) -> None:
    images = _images_of(clouds, name)
    assert [i.status for i in images] == ["active"], [(i.id, i.status) for i in images]
    assert images[0].checksum == hashlib.md5(content).hexdigest()
    assert images[0].hash_value == hashlib.sha512(content).hexdigest()
    assert images[0].size == len(content)


@pytest.mark.parametrize(
    ("stagger", "caches"),
    [(0.0, 1), (1.0, 1), (0.0, 2), (1.0, 2)],
    ids=["together", "a-second-apart", "two-caches-together", "two-caches-a-second-apart"],
)
def test_two_syncs_into_glance_leave_exactly_one_image(
    glance: Path, tmp_path: Path, stagger: float, caches: int
) -> None:
    """One cache folder: the second sync waits for the first and then finds the image. Two
    (two users, two hosts): both upload, and both keep the oldest copy."""
    name = f"race{int(stagger)}{caches}"
    content = _published(tmp_path, name)
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(glance)}
    with http_server(tmp_path / "repo", rate=RATE) as url:
        argv = [url, "glance:testglance"]
        if caches == 1:
            env["OSBAKE_CACHE_DIR"] = str(tmp_path / "cache")
            runs = osbake_sync_together([argv, argv], env, stagger=stagger)
        else:
            runs = _with_own_caches(argv, env, tmp_path, stagger)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
    _assert_one_intact_image(glance, name, content)
    if caches == 1:
        assert sorted(r.stdout.split(" transferred")[0][-1] for r in runs) == ["0", "1"]
        assert any("waiting for another sync" in r.stderr for r in runs)
    for cache in tmp_path.glob("cache*"):
        assert [p.name for p in cache.rglob("*") if p.is_file()] == []  # nothing staged


def _with_own_caches(
    argv: list[str], env: dict[str, str], tmp_path: Path, stagger: float
) -> list[subprocess.CompletedProcess[str]]:
    procs = []
    for n in range(2):
        if n and stagger:
            time.sleep(stagger)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "osbake", "sync", *argv],
                env={**env, "OSBAKE_CACHE_DIR": str(tmp_path / f"cache{n}")},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        runs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return runs


@pytest.mark.parametrize("kill_when", ["queued", "saving"])
def test_a_killed_upload_leaves_nothing_behind_after_the_next_sync(
    glance: Path, tmp_path: Path, kill_when: str
) -> None:
    name = f"killed{kill_when}"
    content = _published(tmp_path, name, mib=6)
    cache = tmp_path / "cache"
    stall = b"PUT /v2/images/" if kill_when == "queued" else None
    with (
        http_server(tmp_path / "repo") as url,
        throttled_proxy(_port(glance), RATE, stall_on=stall) as port,
    ):
        slow = _clouds(tmp_path / "clouds.yaml", port)
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(slow), "OSBAKE_CACHE_DIR": str(cache)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "osbake", "sync", url, "glance:testglance"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not any(i.status == kill_when for i in _images_of(glance, name)):
                assert proc.poll() is None, "the sync ended before it could be killed"
                assert time.monotonic() < deadline, f"no image became {kill_when}"
                time.sleep(0.2)
            time.sleep(1.0)  # well into the upload
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    # The kill left an image that is not active (Glance puts a broken upload back to queued).
    left = _images_of(glance, name)
    assert left and all(i.status in ("queued", "saving") for i in left), [i.status for i in left]

    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(glance), "OSBAKE_CACHE_DIR": str(cache)}
    with http_server(tmp_path / "repo") as url:
        again = subprocess.run(
            [sys.executable, "-m", "osbake", "sync", url, "glance:testglance"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert again.returncode == 0, again.stderr
    assert "by an interrupted sync" in again.stderr
    _assert_one_intact_image(glance, name, content)
    assert not any(i.id == left[0].id for i in _connect(glance).image.images())


def test_the_docs_first_example_works_verbatim(
    glance: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/publish.md's `osbake sync https://images.example.org/ glance:mycloud --keyring
    publisher.gpg arch=amd64 --max 1`, with only the URL pointed at a local server."""
    docs = (Path(__file__).parents[2] / "docs/publish.md").read_text()
    line = next(ln for ln in docs.splitlines() if ln.startswith("osbake sync https://"))
    argv = shlex.split(line)
    assert argv[1:3] == ["sync", "https://images.example.org/"]
    with gpg_key(tmp_path) as key:
        monkeypatch.setenv("GNUPGHOME", str(key.home))
        builds = []
        for day, arch in (("20", "amd64"), ("21", "amd64"), ("21", "arm64")):
            content = _qcow2(tmp_path / f"{day}{arch}.qcow2", int(day) - 18)
            builds.append(
                make_build(
                    tmp_path / f"out{day}{arch}",
                    name="docs",
                    arch=arch,
                    finished=f"2026-11-{day}T10:00:00+00:00",
                    files={"docs.qcow2": ("qcow2", content)},
                )
            )
        for manifest in builds:
            publish([manifest], tmp_path / "repo", sign=key.fingerprint)
        (tmp_path / "publisher.gpg").write_bytes(key.keyring.read_bytes())
    _clouds(tmp_path / "mycloud.yaml", _port(glance), name="mycloud")
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(tmp_path / "mycloud.yaml"),
        "OSBAKE_CACHE_DIR": str(tmp_path / "cache"),
    }
    with http_server(tmp_path / "repo") as url:
        argv[2] = url
        run = subprocess.run(
            [sys.executable, "-m", "osbake", *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    assert "1 items selected, 1 transferred" in run.stdout  # the newest amd64 disk only
    images = [i for i in _connect(glance).image.images() if i.name.startswith("docs-")]
    assert [(i.name, i.status) for i in images] == [("docs-bookworm-amd64-20261121", "active")]


def test_a_stream_with_sha256_only_is_uploaded_once(glance: Path, tmp_path: Path) -> None:
    """Glance hashes with md5 and sha512; a stream that gives only sha256 is still known
    again (by what osbake recorded of the file it checked), not uploaded on every sync."""
    content = _published(tmp_path, "onlysha256", mib=2)
    products = tmp_path / "repo/streams/v1/org.osbake:daily:download.json"
    tree = json.loads(products.read_text())
    for product in tree["products"].values():
        for version in product["versions"].values():
            for item in version["items"].values():
                item.pop("md5", None)
                item.pop("sha512", None)
    products.write_text(json.dumps(tree))
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(glance),
        "OSBAKE_CACHE_DIR": str(tmp_path / "cache"),
    }
    with http_server(tmp_path / "repo") as url:
        for transferred in (1, 0):
            run = subprocess.run(
                [sys.executable, "-m", "osbake", "sync", url, "glance:testglance"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert run.returncode == 0, run.stderr
            assert f"1 items selected, {transferred} transferred" in run.stdout
    _assert_one_intact_image(glance, "onlysha256", content)
