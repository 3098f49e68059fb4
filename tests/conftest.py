"""Shared test set-up.

Unit tests may not start real processes: any subprocess in tests/unit fails unless
the test is marked `real_subprocess` (STYLE.md: fake the subprocess, or say so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# Every build a test starts keeps its step cache within this budget: the default (20 GiB)
# is for one user, and a run fills the caches of root and of two build users on one disk.
# Root's builds in one `make test` are a dozen images, arm64 among them, each 1.3 GB of
# layers from a cold cache (some share their first layers); with 8 GiB the run's first
# images were evicted by its last ones and built cold in the next run.
os.environ.setdefault("OSBAKE_CACHE_MAX", "12GiB")

# First boots (tests/e2e): the user the instance is given, and a first-boot script (in
# the user-data) that prints what cloud-init did to the serial console as
# `E2E-NAME=value` lines, read back by `first_boot_values`.
FIRST_BOOT_USER = "ops"
FIRST_BOOT_REPORT = """\
#!/bin/sh
modules=/lib/modules/$(uname -r)/kernel
status=/run/cloud-init/status.json
echo "E2E-HOST=$(hostname)"
echo "E2E-USER=$(getent passwd ops)"
echo "E2E-KEY=$(cat /home/ops/.ssh/authorized_keys)"
echo "E2E-ROOT=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')"
echo "E2E-ROOTDEV=$(findmnt -n -o SOURCE /)"
echo "E2E-ADDRESSES=$(ip -4 -o address show scope global | awk '{print $2, $4}' | tr '\\n' ' ')"
echo "E2E-DS=$(grep -o '"datasource": "[A-Za-z]*' $status | cut -d'"' -f4)"
echo "E2E-CMDLINE=$(cat /proc/cmdline)"
echo "E2E-MODULES=$(find $modules -name '*.ko*' | wc -l) $(find $modules -name '*.ko.xz' | wc -l)"
echo "E2E-SOUND=$(modprobe -n snd >/dev/null 2>&1 && echo yes || echo no)"
echo "E2E-LOADED=$(cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' ')"
echo "E2E-DONE"
"""
FAILED_MODULE = re.compile(r"Running module \S+ .* failed")


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
        self._done: dict[tuple[str, str | None, str | None, tuple[str, ...]], Path] = {}

    def build(
        self,
        recipe: str | Path,
        variant: str | None = None,
        arch: str | None = None,
        outputs: Sequence[str] = (),
    ) -> Path:
        """Build once; return the output directory (artifacts + manifest).

        `outputs` replaces the recipe's output formats, through a recipe that extends
        it: the tree and the disk come from the step cache of the recipe's own build.
        """
        recipe_path = Path(recipe)
        if not recipe_path.is_absolute():
            recipe_path = EXAMPLES / recipe_path
        key = (str(recipe_path), variant, arch, tuple(outputs))
        if key not in self._done:
            name = (
                recipe_path.stem
                + (f"-{variant}" if variant else "")
                + (f"-{arch}" if arch else "")
                + ("-" + "-".join(outputs) if outputs else "")
            )
            outdir = self.root / name
            if outputs:
                # (A variant's own outputs would replace these: not both.)
                assert variant is None, (
                    "outputs= replaces the outputs of the recipe, not a variant's"
                )
                child = self.root / f"{name}.yaml"
                parent, formats = json.dumps(str(recipe_path)), json.dumps(list(outputs))
                child.write_text(f"extends: {parent}\noutputs: {formats}\n")
                recipe_path = child
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
def first_boot_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an ssh key pair (`key`, `key.pub`) and `user-data` that runs the
    first-boot report (FIRST_BOOT_REPORT)."""
    folder = tmp_path_factory.mktemp("first-boot-inputs")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e@osbake",
         "-f", str(folder / "key")],
        check=True,
    )  # fmt: skip
    user_data = {
        "write_files": [
            {
                "path": "/usr/local/sbin/e2e-report",
                "permissions": "0755",
                "content": FIRST_BOOT_REPORT,
            }
        ],
        "runcmd": [["/usr/local/sbin/e2e-report"]],
    }
    (folder / "user-data").write_text("#cloud-config\n" + json.dumps(user_data, indent=1) + "\n")
    return folder


def first_boot_values(console: str) -> dict[str, str]:
    """The first-boot report's values (the first of each name) from a console log."""
    values: dict[str, str] = {}
    for match in re.finditer(r"E2E-([A-Z]+)=(.*?)\r?$", console, re.MULTILINE):
        values.setdefault(match.group(1), match.group(2).strip())
    return values


def check_provisioned(values: dict[str, str], inputs: Path, hostname: str) -> None:
    """The instance has the host name, the user and the key it was given."""
    assert values["HOST"] == hostname
    user = values["USER"]
    assert user.startswith(f"{FIRST_BOOT_USER}:x:") and user.endswith(":/bin/bash"), user
    assert values["KEY"] == (inputs / "key.pub").read_text().strip()


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
