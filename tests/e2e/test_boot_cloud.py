"""The cloud image boots under QEMU (TCG) with BIOS, UEFI and UEFI Secure Boot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from osbake.manifest import file_sha256
from tests.conftest import ImageBuilds

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cloud(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml")


@pytest.mark.parametrize("firmware", ["bios", "uefi", "uefi-secureboot"])
def test_boots_to_login(cloud: Path, firmware: str, tmp_path: Path) -> None:
    image = cloud / "debian-cloud.qcow2"
    before = file_sha256(image)
    expect = ["Secure boot enabled", "login:"] if firmware == "uefi-secureboot" else ["login:"]
    argv = [
        sys.executable,
        "-m",
        "osbake",
        "boot",
        str(image),
        "--firmware",
        firmware,
        "--accel",
        "tcg",
        "--timeout",
        "400",
        "--fail-on",
        "Kernel panic",
        "--console-log",
        str(tmp_path / "console.log"),
    ]
    for pattern in expect:
        argv += ["--expect", pattern]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert "Debian GNU/Linux 12" in console
    assert file_sha256(image) == before  # booted on an overlay, never modified
