"""Shared test set-up.

Unit tests may not start real processes: any subprocess in tests/unit fails unless
the test is marked `real_subprocess` (STYLE.md: fake the subprocess, or say so).
"""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_subprocess: a unit test that runs a real command")


# In CI (CI=true) a skipped test is a failure: CI installs every tool the tests
# need, so a skip there hides something missing. Only these reasons may skip.
CI_ALLOWED_SKIPS = ("no usable /dev/kvm",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if not any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be missing: {reason}"


@pytest.fixture(autouse=True)
def _no_real_subprocess(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    path = Path(str(request.node.fspath))
    if "unit" in path.parts and request.node.get_closest_marker("real_subprocess") is None:

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"unit test started a real process: {args[:1]}")

        monkeypatch.setattr(subprocess, "Popen", refuse)
        monkeypatch.setattr(os, "fork", refuse)
    yield


def is_root() -> bool:
    return os.geteuid() == 0


class ImageBuilds:
    """Builds example images once per test run and hands them to every test that asks.

    Real builds take minutes; tests share them instead of building their own.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: dict[tuple[str, str | None, str | None], Path] = {}

    def build(
        self, recipe: str | Path, variant: str | None = None, arch: str | None = None
    ) -> Path:
        """Build once; return the output directory (artifacts + manifest)."""
        recipe_path = Path(recipe)
        if not recipe_path.is_absolute():
            recipe_path = EXAMPLES / recipe_path
        key = (str(recipe_path), variant, arch)
        if key not in self._done:
            name = (
                recipe_path.stem + (f"-{variant}" if variant else "") + (f"-{arch}" if arch else "")
            )
            outdir = self.root / name
            argv = [
                sys.executable,
                "-m",
                "osbake",
                "build",
                str(recipe_path),
                "-o",
                str(outdir),
                "--log",
                str(outdir) + ".log",
            ]
            if variant:
                argv += ["--variant", variant]
            if arch:
                argv += ["--arch", arch]

            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise AssertionError(f"building {recipe_path} failed:\n{result.stderr[-4000:]}")
            self._done[key] = outdir
        return self._done[key]


@pytest.fixture(scope="session")
def image_builds(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilds:
    return ImageBuilds(tmp_path_factory.mktemp("images"))


# -- a real Glance, shared by the sync tests and the console's release tests -------------

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
