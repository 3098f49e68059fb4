"""The i386 example: built natively on an amd64 host, booted under qemu-system-i386
with a BIOS (GRUB i386-pc) and with 32-bit UEFI (OVMF ia32, GRUB i386-efi), each
boot given a NoCloud seed whose host name must show on the console."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ImageBuilds

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def i386(image_builds: ImageBuilds, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The example as it is, but from the main archive only: a mirror part-way through a
    # sync serves a bookworm-security i386 index whose size does not match its Release
    # file (seen on this project's test mirror for days), and apt refuses it. What is
    # tested here, building and booting i386, does not depend on security updates.
    recipe = tmp_path_factory.mktemp("i386") / "debian-i386.yaml"
    example = json.dumps(str(EXAMPLES / "debian-i386.yaml"))
    recipe.write_text(f"extends: {example}\noptions:\n  debian:\n    security: false\n")
    return image_builds.build(recipe)


def test_the_manifest_says_i386(i386: Path) -> None:
    manifest = json.loads((i386 / "debian-i386.manifest.json").read_text())
    assert manifest["arch"] == "i386"
    kernels = [p for p in manifest["packages"] if p["name"].startswith("linux-image-")]
    assert any("686-pae" in p["name"] for p in kernels), kernels
    assert {p["arch"] for p in manifest["packages"]} <= {"i386", "all"}


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_boots_with_its_firmware(i386: Path, firmware: str, tmp_path: Path) -> None:
    host = f"i386-{firmware}"
    log = tmp_path / "console.log"
    argv = [
        sys.executable, "-m", "osbake", "boot", str(i386 / "debian-i386.qcow2"),
        "--arch", "i386", "--firmware", firmware, "--accel", "tcg",
        "--datasource", "nocloud", "--hostname", host,
        "--expect", f"{host} login:", "--fail-on", "Kernel panic",
        "--timeout", "500", "--console-log", str(log),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = log.read_text(errors="replace")
    assert "686-pae" in console  # Debian's 32-bit kernel, not an amd64 one
    if firmware == "uefi":
        assert "efi: EFI v" in console  # booted by the firmware's UEFI, not SeaBIOS
    else:
        assert "efi: EFI v" not in console
