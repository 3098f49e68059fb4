"""The test run's shared folders under /var/tmp: claimed, and reaped after a killed run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import shared_folders


def test_claim_reaps_what_a_killed_run_left_and_keeps_a_live_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_folders, "ROOT", tmp_path)
    left = tmp_path / "osbake-x-old"  # a killed run's folder: no lock file
    (left / "venv").mkdir(parents=True)
    other = tmp_path / "someone-else"  # another program's folder
    other.mkdir()
    live = shared_folders.claim("osbake-x-")  # a run that still goes on
    assert live.path.is_dir() and (live.path.stat().st_mode & 0o777) == 0o755
    mine = shared_folders.claim("osbake-x-")
    assert not left.exists() and other.is_dir() and live.path.is_dir()
    shared_folders.release(mine)
    assert not mine.path.exists() and not mine.lock_path.exists()
    assert live.path.is_dir()
    shared_folders.release(live)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["someone-else"]
