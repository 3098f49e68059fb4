"""arm64 on an amd64 host: the cloud example's arm64 variant, built through
binfmt_misc and qemu-user-static, booted with UEFI (AAVMF, GRUB's BOOTAA64.EFI) on
QEMU's virt machine to cloud-init done with a NoCloud seed; and the board-style
example booted by U-Boot reading extlinux.conf.

Both build a kernel tree under emulation. The cloud image (about 8 minutes cold on a
quiet 2-core host, seconds from the step cache) runs in `make test`: one arm64 boot per
run. The board image's generic kernel makes a far bigger initramfs under emulation, so
its boot runs in `make test-slow`, and so does the check that the host's programs
standing in for the tree's change no byte of the image (two uncached arm64 builds).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ImageBuilds

pytestmark = [pytest.mark.e2e]

DONE = r"Cloud-init v\. \S+ finished at .* Datasource DataSourceNoCloud"
USER_DATA = """\
#cloud-config
runcmd:
  - sh -c 'echo "E2E-HOST=$(hostname) E2E-MACHINE=$(uname -m)" > /dev/ttyAMA0'
  - sh -c 'echo "E2E-KEY=$(cat /home/ops/.ssh/authorized_keys)" > /dev/ttyAMA0'
"""


def boot(image: Path, log: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = [
        sys.executable, "-m", "osbake", "boot", str(image), "--accel", "tcg",
        "--timeout", "1500", "--fail-on", "Kernel panic", "--console-log", str(log), *extra,
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result, time.monotonic() - started


def test_arm64_cloud_image_boots_with_uefi_to_cloud_init_done(
    image_builds: ImageBuilds, tmp_path: Path
) -> None:
    out = image_builds.build("debian-cloud.yaml", variant="arm64")
    manifest = json.loads((out / "debian-cloud-arm64.manifest.json").read_text())
    assert manifest["arch"] == "arm64" and manifest["boot"] == ["uefi"]
    assert {p["arch"] for p in manifest["packages"]} <= {"arm64", "all"}
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")]
    subprocess.run(keygen, check=True)
    (tmp_path / "user-data").write_text(USER_DATA)
    log = tmp_path / "console.log"
    # --arch and --firmware come from the manifest beside the image (arm64, uefi).
    result, seconds = boot(
        out / "debian-cloud-arm64.qcow2", log,
        "--datasource", "nocloud", "--hostname", "e2e-arm64", "--user", "ops",
        "--ssh-key", str(tmp_path / "key.pub"), "--user-data", str(tmp_path / "user-data"),
        "--expect", "E2E-KEY=", "--expect", DONE,
    )  # fmt: skip
    console = log.read_text(errors="replace")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + console[-3000:]
    print(f"arm64 uefi: cloud-init done {seconds:.0f} s from osbake boot's start")
    assert "E2E-HOST=e2e-arm64 E2E-MACHINE=aarch64" in console
    key = (tmp_path / "key.pub").read_text().split()[1]
    assert re.search(rf"E2E-KEY=ssh-ed25519 {re.escape(key)}", console)
    assert "ttyAMA0" in console


@pytest.mark.slow
def test_arm64_board_image_boots_through_u_boot(image_builds: ImageBuilds, tmp_path: Path) -> None:
    out = image_builds.build("debian-arm64-board.yaml")
    log = tmp_path / "console.log"
    result, seconds = boot(
        out / "debian-arm64-board.qcow2", log,
        "--datasource", "nocloud", "--hostname", "e2e-board",
        "--expect", "U-Boot", "--expect", "extlinux", "--expect", "e2e-board login:",
    )  # fmt: skip
    console = log.read_text(errors="replace")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + console[-3000:]
    print(f"arm64 extlinux: login after {seconds:.0f} s")
    assert "BOOTAA64" not in console and "GRUB" not in console
    assert re.search(r"Kernel command line: .*root=UUID=\S+ ro .*console=ttyAMA0", console)


@pytest.mark.slow
def test_the_hosts_programs_change_no_byte_of_the_image(tmp_path: Path) -> None:
    """Built twice without the step cache: with the host's coreutils, grep, sed,
    findutils, kmod, dpkg-deb and tar standing in for the tree's, in the bootstrap
    and after (osbake.distros.host_programs), and without."""
    images = {}
    for setting in ("1", "0"):
        out = tmp_path / f"host-programs-{setting}"
        argv = [
            sys.executable, "-m", "osbake", "build", "debian-cloud.yaml", "--variant", "arm64",
            "--no-cache", "-o", str(out), "--log", f"{out}.log",
        ]  # fmt: skip
        env = {**os.environ, "OSBAKE_HOST_PROGRAMS": setting}
        result = subprocess.run(
            argv, cwd=EXAMPLES, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr[-4000:]
        log = Path(f"{out}.log").read_text()
        used = re.findall(r"host programs for the tree \(.*\): (.*)", log)
        bootstrap = re.findall(r"host programs for the bootstrap: (.*)", log)
        if setting == "1":
            if not used:
                pytest.skip("no program of the host has the tree's version (dpkg-query)")
            assert {"readlink", "kmod", "dpkg-deb"} <= set(used[-1].split())
            assert "dpkg-deb" in bootstrap[0].split(), bootstrap
        else:
            assert not used and not bootstrap
        qcow2 = (out / "debian-cloud-arm64.qcow2").read_bytes()
        images[setting] = hashlib.sha256(qcow2).hexdigest()
    assert images["1"] == images["0"]
