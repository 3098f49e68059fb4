"""osbake's Debian version order is dpkg's: every pair the unit tests use, asked of dpkg."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from osbake.diff import compare_versions
from tests.unit.test_diff import VERSION_PAIRS


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg (Debian)")
@pytest.mark.parametrize(("a", "b"), VERSION_PAIRS)
def test_dpkg_agrees(a: str, b: str) -> None:
    assert subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    assert compare_versions(a, b) == -1
