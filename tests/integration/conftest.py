"""Servers shared by the integration tests of several modules (started once per run)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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
