"""The cloud image finds its instance in a metadata service osbake serves, as on EC2 and OpenStack.

`osbake boot --datasource ec2|openstack` serves the host name, a user with an ssh key and
user-data at 169.254.169.254; cloud-init must pick that datasource by the SMBIOS strings
(ds-identify), read it, finish with no module failing, and leave what it was given.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ImageBuilds

pytestmark = pytest.mark.e2e

DONE = r"Cloud-init v\. \S+ finished at .* Datasource DataSource"
FAILED_MODULE = re.compile(r"Running module \S+ .* failed")
USER_DATA = """\
#cloud-config
runcmd:
  - sh -c 'echo "E2E-HOST=$(hostname)" > /dev/ttyS0'
  - sh -c 'cloud-init schema --system 2>&1 | tail -n 4 | sed "s/^/E2E-SCHEMA /" > /dev/ttyS0'
  - sh -c 'echo "E2E-KEY=$(cat /home/ops/.ssh/authorized_keys)" > /dev/ttyS0'
"""


@pytest.fixture(scope="module")
def cloud(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("datasource-inputs")
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "e2e@osbake",
            "-f",
            str(folder / "key"),
        ],
        check=True,
    )
    (folder / "user-data").write_text(USER_DATA)
    return folder


@pytest.mark.parametrize(
    ("datasource", "name"), [("ec2", "DataSourceEc2"), ("openstack", "DataSourceOpenStack")]
)
def test_boots_with_served_metadata(
    cloud: Path, inputs: Path, tmp_path: Path, datasource: str, name: str
) -> None:
    hostname = f"e2e-{datasource}"
    log = tmp_path / "console.log"
    argv = [
        sys.executable, "-m", "osbake", "boot", str(cloud / "debian-cloud.qcow2"),
        "--accel", "tcg", "--timeout", "500", "--fail-on", "Kernel panic",
        "--datasource", datasource, "--hostname", hostname, "--user", "ops",
        "--ssh-key", str(inputs / "key.pub"), "--user-data", str(inputs / "user-data"),
        "--expect", "E2E-KEY=", "--expect", DONE, "--console-log", str(log),
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    console = log.read_text(errors="replace")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + console[-3000:]
    print("\n".join(line for line in console.splitlines() if "E2E-SCHEMA" in line))
    print(f"{datasource}: cloud-init done, {seconds:.0f} s from osbake boot's start")
    finished = re.search(DONE + r"(\w+)", console)
    assert finished is not None
    assert finished.group(1).startswith(name[len("DataSource") :]), finished.group(0)
    assert f"E2E-HOST={hostname}" in console
    key = (inputs / "key.pub").read_text().split()[1]
    assert re.search(rf"E2E-KEY=ssh-ed25519 {re.escape(key)}", console)
    assert not FAILED_MODULE.search(console), FAILED_MODULE.search(console)
    # The service stopped with the boot: nothing of it is left running.
    leftovers = subprocess.run(
        ["pgrep", "-f", "osbake-metadata-"], capture_output=True, check=False
    )
    assert leftovers.returncode == 1, leftovers.stdout
