"""The bare-metal element refuses a kernel that cannot drive real machines, and says why."""

from __future__ import annotations

import subprocess

import pytest

from osbake.elements.catalog import BUILTIN_DIR

pytestmark = pytest.mark.integration

CHECK = BUILTIN_DIR / "bare-metal" / "pre-install" / "05-bare-metal-kernel"


def check(kernel: str, cloud_kernel: str = "0") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "OSBAKE_KERNEL": kernel,
        "OSBAKE_OPT_CLOUD_KERNEL": cloud_kernel,
    }
    return subprocess.run([str(CHECK)], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("kernel", ["generic", "server", "linux-image-rt-amd64"])
def test_kernels_with_hardware_drivers_pass(kernel: str) -> None:
    assert check(kernel).returncode == 0


def test_the_cloud_kernel_is_refused_with_the_fix() -> None:
    result = check("cloud")
    assert result.returncode == 1
    message = result.stderr
    assert "kernel: cloud" in message and "kernel: generic" in message
    assert "cloud_kernel: true" in message
    assert len(message.strip().splitlines()) == 1  # one paragraph


def test_the_cloud_kernel_passes_when_asked_for() -> None:
    assert check("cloud", cloud_kernel="1").returncode == 0


def test_no_kernel_is_refused() -> None:
    result = check("none")
    assert result.returncode == 1 and "kernel: generic" in result.stderr
