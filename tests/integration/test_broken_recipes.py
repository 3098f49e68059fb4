"""`osbake build` on broken recipes: a clear message, a non-zero exit, nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def osbake(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osbake", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


CASES = {
    "unknown key": ("name: x\nrelease: bookworm\npackges: [curl]\n", ":3", "packages"),
    "bad type": ("name: x\narch: amd64\nelements: users\n", ":3", "must be a list"),
    "unknown element": ("name: x\nelements: [users, timezon]\n", ":2", "timezone"),
    "missing file": (
        "name: x\nfiles:\n  - {src: nope.txt, dest: /etc/x}\n",
        ":3",
        "does not exist",
    ),
    "bad option": (
        "name: x\nelements: [timezone]\noptions:\n  timezone: {zon: UTC}\n",
        ":4",
        "did you mean 'zone'",
    ),
    "dependency cycle": ("name: x\nelements: [loop-a]\n", "element.yaml", "cycle"),
    "bios on arm64": (
        "name: x\narch: arm64\nkernel: cloud\nelements: [vm]\nboot: [uefi, bios]\n",
        ":5",
        "remove bios",
    ),
    "u-boot cannot read the kernel": (
        "name: x\narch: arm64\nkernel: generic\nelements: [vm]\nboot: [extlinux]\n"
        "disk:\n  partitions:\n    - {name: root, size: rest, fs: btrfs, mount: /}\n",
        ":8",
        "fs: ext4",
    ),
    "unknown arch": ("name: x\narch: [amd64, m68k]\n", ":2", "'riscv64'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_recipe(case: str, tmp_path: Path) -> None:
    text, where, fix = CASES[case]
    for name, dep in (("loop-a", "loop-b"), ("loop-b", "loop-a")):
        folder = tmp_path / "elements" / name
        folder.mkdir(parents=True)
        (folder / "element.yaml").write_text(f"description: test\ndepends: [{dep}]\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    before = mounts()
    result = osbake("build", str(recipe), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr
    assert where in result.stderr, result.stderr
    assert fix in result.stderr, result.stderr
    assert "hint:" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert mounts() == before
