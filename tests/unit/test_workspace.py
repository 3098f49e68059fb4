"""Locked folders: a claim's folder lives while its lock is held; reaping takes the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from osbake.settings import Settings
from osbake.workspace import LockedFolder, reap_folders, workspace


def test_reaping_removes_only_folders_nobody_holds(tmp_path: Path) -> None:
    held = LockedFolder(tmp_path / "held")
    dead = LockedFolder(tmp_path / "dead")
    assert dead.lock is not None
    dead.lock.close()  # as if its build was killed: the lock file stays, unlocked
    (tmp_path / "orphan").mkdir()  # no lock file at all
    removed: list[str] = []

    def remove(path: Path) -> None:
        removed.append(path.name)
        shutil.rmtree(path)

    assert reap_folders(tmp_path, remove) == 2
    assert sorted(removed) == ["dead", "orphan"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "held.lock"]
    held.path.rmdir()
    held.release()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.real_subprocess  # the sandbox removes trees with rm
def test_a_workspace_is_gone_afterwards_and_reaps_what_a_killed_build_left(
    tmp_path: Path,
) -> None:
    settings = Settings(tmp_path)
    settings.work_dir.mkdir(parents=True)
    (settings.work_dir / "killed").mkdir()
    with workspace(settings, "image") as folder:
        assert folder.is_dir() and folder.name.startswith("image-")
        assert not (settings.work_dir / "killed").exists()
    assert list(settings.work_dir.iterdir()) == []
