"""The vm element's post-install script, run by the host's shell against an /etc of its own.

bwrap gives the script the host's /usr read-only and a fresh folder as /etc, with a
systemctl that only records what it was asked; the built image's side is checked in
tests/e2e/test_disk_image.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from osbake.elements.catalog import BUILTIN_DIR

pytestmark = pytest.mark.integration

SCRIPT = BUILTIN_DIR / "vm" / "post-install" / "50-vm"
RESOLVED_DROP_IN = "systemd/resolved.conf.d/50-osbake.conf"
WAIT_ONLINE_DROP_IN = "systemd/system/systemd-networkd-wait-online.service.d/osbake.conf"


def run_script(tmp_path: Path, **options: str) -> subprocess.CompletedProcess[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bwrap (bubblewrap) is not installed: make setup installs it")
    etc, fake = tmp_path / "etc", tmp_path / "fake"
    etc.mkdir(exist_ok=True)
    fake.mkdir(exist_ok=True)
    systemctl = fake / "systemctl"
    systemctl.write_text('#!/bin/sh\necho "$*" >> /etc/systemctl.calls\n')
    systemctl.chmod(0o755)
    env = {"PATH": "/fake:/usr/bin", "OSBAKE_CONSOLE": "ttyS0"}
    env.update({f"OSBAKE_OPT_{name.upper()}": value for name, value in options.items()})
    argv = [
        bwrap, "--unshare-all", "--die-with-parent", "--clearenv",
        "--ro-bind", "/usr", "/usr",
        *(arg for link in ("bin", "lib", "lib64", "sbin") for arg in ("--symlink", f"usr/{link}", f"/{link}")),  # noqa: E501
        "--bind", str(etc), "/etc", "--ro-bind", str(fake), "/fake",
        "--ro-bind", str(SCRIPT), "/50-vm", "--proc", "/proc", "--dev", "/dev",
        *(arg for name, value in env.items() for arg in ("--setenv", name, value)),
        "/bin/sh", "/50-vm",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_by_default_llmnr_and_mdns_are_off_and_the_wait_is_bounded(tmp_path: Path) -> None:
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    etc = tmp_path / "etc"
    resolved = (etc / RESOLVED_DROP_IN).read_text()
    assert "LLMNR=no" in resolved and "MulticastDNS=no" in resolved
    assert "ExecStart=/usr/lib/osbake/wait-online 30" in (etc / WAIT_ONLINE_DROP_IN).read_text()
    calls = (etc / "systemctl.calls").read_text().splitlines()
    assert "enable systemd-networkd.service systemd-resolved.service" in calls
    assert "enable serial-getty@ttyS0.service" in calls


def test_llmnr_true_removes_the_drop_in_a_lower_layer_wrote(tmp_path: Path) -> None:
    first = run_script(tmp_path)  # as an earlier build of the same tree left it
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "etc" / RESOLVED_DROP_IN).is_file()
    done = run_script(tmp_path, llmnr="1", wait_online_timeout="7")
    assert done.returncode == 0, done.stderr
    etc = tmp_path / "etc"
    assert not (etc / RESOLVED_DROP_IN).exists()
    assert "ExecStart=/usr/lib/osbake/wait-online 7" in (etc / WAIT_ONLINE_DROP_IN).read_text()


def test_a_wait_online_timeout_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    done = run_script(tmp_path, wait_online_timeout="30; reboot")
    assert done.returncode == 1
    assert "wait_online_timeout must be a number of seconds, not '30; reboot'" in done.stderr
    assert not (tmp_path / "etc" / WAIT_ONLINE_DROP_IN).exists()
