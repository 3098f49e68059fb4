"""The cloud example as a live ISO (variant `live`): BIOS and UEFI boot it under QEMU
(TCG) to cloud-init done with a NoCloud seed, / being live-boot's overlay.

The two boots run at the same time (one QEMU each) to keep the suite's time down.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osbake.manifest import file_sha256
from tests.conftest import ImageBuilds

pytestmark = pytest.mark.e2e

DONE = r"Cloud-init v\. \S+ finished at .* Datasource DataSourceNoCloud"
FAILED_MODULE = re.compile(r"Running module \S+ .* failed")
USER_DATA = """\
#cloud-config
runcmd:
  - sh -c 'echo "E2E-ROOT=$(findmnt -n -o FSTYPE /) E2E-HOST=$(hostname)" > /dev/ttyS0'
"""


@pytest.fixture(scope="module")
def live(image_builds: ImageBuilds) -> Path:
    return image_builds.build("debian-cloud.yaml", "live")


def osbake(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "osbake", *map(str, args)]


def test_the_iso_and_its_manifest(live: Path, tmp_path: Path) -> None:
    image = live / "debian-cloud-live.iso"
    manifest = json.loads((live / "debian-cloud-live.manifest.json").read_text())
    [artifact] = manifest["artifacts"]
    assert artifact["format"] == "iso" and artifact["file"] == image.name
    assert artifact["size"] == image.stat().st_size
    assert artifact["sha256"] == file_sha256(image)
    assert "boot=live" in manifest["cmdline"].split()
    assert not any(s["name"] == "disk" for s in manifest["steps"])  # no disk was made
    report = subprocess.run(
        ["xorriso", "-indev", str(image), "-report_el_torito", "plain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {"BIOS", "UEFI"} <= set(re.findall(r"El Torito boot img\s*:\s*\d+\s+(\w+)", report))
    # The squashfs leaves the tree's own initramfs out; the ISO carries it in live/.
    extract = ["-extract", "/live/filesystem.squashfs", str(tmp_path / "fs.squashfs")]
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(image), *extract],
        capture_output=True,
        check=True,
    )
    listing = subprocess.run(
        ["unsquashfs", "-l", "-d", "", str(tmp_path / "fs.squashfs")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "/usr/share/osbake/manifest.json" in listing
    assert any(p.startswith("/boot/vmlinuz-") for p in listing)
    assert not any(p.startswith("/boot/initrd.img") for p in listing)
    # osbake inspect reads the manifest from inside the ISO when none is beside it.
    alone = tmp_path / "alone" / image.name
    alone.parent.mkdir()
    shutil.copyfile(image, alone)
    result = subprocess.run(
        osbake("inspect", alone, "--summary"), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "manifest:      inside debian-cloud-live.iso (/osbake/manifest.json)" in result.stdout
    assert result.stdout.startswith("debian-cloud-live  (debian-cloud, variant live,")


def test_boots_with_bios_and_uefi_to_cloud_init_done(live: Path, tmp_path: Path) -> None:
    image = live / "debian-cloud-live.iso"
    (tmp_path / "user-data").write_text(USER_DATA)
    seeds, boots = {}, {}
    for firmware in ("bios", "uefi"):
        seeds[firmware] = tmp_path / f"seed-{firmware}.iso"
        seed = osbake("seed", "-o", seeds[firmware], "--hostname", f"live-{firmware}")
        subprocess.run(
            [*seed, "--user-data", str(tmp_path / "user-data")], capture_output=True, check=True
        )
    started = time.monotonic()
    for firmware in ("bios", "uefi"):
        argv = osbake(
            "boot", image, "--firmware", firmware, "--seed", seeds[firmware],
            "--accel", "tcg", "--timeout", "700", "--fail-on", "Kernel panic",
            "--expect", "E2E-ROOT=", "--expect", DONE,
            "--console-log", tmp_path / f"{firmware}.log",
        )  # fmt: skip
        boots[firmware] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for firmware, process in boots.items():
        output, _ = process.communicate(timeout=800)
        console = (tmp_path / f"{firmware}.log").read_text(errors="replace")
        assert process.returncode == 0, output[-3000:] + console[-3000:]
        print(f"{firmware}: cloud-init done, {time.monotonic() - started:.0f} s from the start")
        print(output.strip())
        assert "boot=live" in console
        assert f"E2E-ROOT=overlay E2E-HOST=live-{firmware}" in console
        assert not FAILED_MODULE.search(console), FAILED_MODULE.search(console)
    assert (
        file_sha256(image)
        == json.loads((live / "debian-cloud-live.manifest.json").read_text())["artifacts"][0][
            "sha256"
        ]
    )  # booted read-only: never modified
