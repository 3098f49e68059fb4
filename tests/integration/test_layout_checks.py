"""A layout that cannot work fails before the bootstrap, naming the partition and how much."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RECIPE = """\
name: tight
kernel: cloud
boot: [uefi]
elements: [vm]
outputs: [qcow2]
disk:
  size: 2GiB
  partitions:
    - {{name: esp, type: esp, size: {esp}, fs: vfat, mount: /boot/efi}}
    - {{name: root, size: {root}, fs: ext4, mount: /}}
"""


@pytest.mark.parametrize(
    ("esp", "root", "expected"),
    [
        ("127MiB", "3GiB", "partition 'root' (3 GiB) does not fit"),
        ("3MiB", "rest", "partition 'esp' (3 MiB) is too small for the UEFI boot files"),
    ],
)
def test_layout_fails_before_bootstrap(tmp_path: Path, esp: str, root: str, expected: str) -> None:
    recipe = tmp_path / "tight.yaml"
    recipe.write_text(RECIPE.format(esp=esp, root=root))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "osbake",
            "build",
            str(recipe),
            "-o",
            str(tmp_path / "out"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "more" in result.stderr
    assert f"{recipe}:" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert not any(e["event"] == "step" for e in events)  # nothing was started
