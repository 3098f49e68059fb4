"""`osbake sync` into a real Glance API server (Debian's glance-api: SQLite, file store,
no Keystone), started once for this module and stopped after it."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbake.publish import publish
from tests.publish_helpers import http_server, make_build

pytestmark = pytest.mark.integration

GLANCE_CONF = """\
[DEFAULT]
bind_host = 127.0.0.1
bind_port = {port}
workers = 0
use_stderr = true
enabled_import_methods = []
[database]
connection = sqlite:///{root}/glance.sqlite
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = {root}/images
[paste_deploy]
# The keystone-less pipeline: every request gets an admin context.
config_file = /etc/glance/glance-api-paste.ini
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
[oslo_concurrency]
lock_path = {root}/lock
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running glance-api; yields a clouds.yaml that points at it."""
    if shutil.which("glance-api") is None or shutil.which("glance-manage") is None:
        pytest.skip(
            "glance-api is not installed (apt-get install glance-api; requirements/apt/publish.txt)"
        )
    root = tmp_path_factory.mktemp("glance")
    (root / "images").mkdir()
    port = _free_port()
    conf = root / "glance-api.conf"
    conf.write_text(GLANCE_CONF.format(port=port, root=root))
    # Debian's glance is Python code from /usr/lib/python3/dist-packages: run it with the
    # system interpreter, not the test venv's.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    subprocess.run(
        ["glance-manage", "--config-file", str(conf), "db_sync"],
        env=env,
        check=True,
        capture_output=True,
    )
    log = (root / "api.log").open("wb")
    proc = subprocess.Popen(
        ["glance-api", "--config-file", str(conf)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/images", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "glance-api did not start:\n" + (root / "api.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)
        clouds = root / "clouds.yaml"
        clouds.write_text(
            "clouds:\n  testglance:\n    auth_type: none\n"
            f"    auth:\n      endpoint: http://127.0.0.1:{port}\n"
        )
        yield clouds
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


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
