"""The output folder: partial outputs of killed builds are removed by the next build,
and only those (never another running build's, never a file osbake does not own)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from osbake.workspace import claim_outputs, partial_name, reap_partials

DEAD = "0123456789abcdef"
ALIVE = "fedcba9876543210"


def leave(outdir: Path, token: str, *finals: str, lock: bool = True) -> list[Path]:
    """What a build killed while writing `finals` leaves: its lock file and partials."""
    if lock:
        (outdir / f".osbake-{token}.lock").write_text("")
    paths = [outdir / partial_name(final, token) for final in finals]
    for path in paths:
        path.write_bytes(b"half")
    return paths


def test_the_partials_of_a_killed_build_are_removed(tmp_path: Path) -> None:
    left = leave(tmp_path, DEAD, "img.qcow2", "img.raw.tar.xz", "img.manifest.json")
    removed = reap_partials(tmp_path)
    assert sorted(removed) == sorted(left)
    assert list(tmp_path.iterdir()) == []


def test_partials_without_a_lock_file_are_removed(tmp_path: Path) -> None:
    left = leave(tmp_path, DEAD, "img.vmdk", lock=False)
    assert reap_partials(tmp_path) == left


def test_a_running_build_keeps_its_partials(tmp_path: Path) -> None:
    with claim_outputs(tmp_path) as token:
        mine = leave(tmp_path, token, "img.qcow2", lock=False)
        dead = leave(tmp_path, DEAD, "img.qcow2")
        # Another build starting now reaps the dead one only.
        with claim_outputs(tmp_path) as other:
            assert other != token
            assert all(p.exists() for p in mine)
            assert not any(p.exists() for p in dead)
        assert all(p.exists() for p in mine)
    # The build ended (however): its own partials and lock went with it.
    assert list(tmp_path.iterdir()) == []


def test_a_lock_held_elsewhere_protects_its_token(tmp_path: Path) -> None:
    lock = tmp_path / f".osbake-{ALIVE}.lock"
    held = leave(tmp_path, ALIVE, "img.raw")
    with lock.open("r") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert reap_partials(tmp_path) == []
    assert held[0].exists()
    assert reap_partials(tmp_path) == held


def test_only_files_osbake_owns_are_touched(tmp_path: Path) -> None:
    keep = [
        tmp_path / "img.qcow2",
        tmp_path / ".img.qcow2.partial",  # no token
        tmp_path / ".img.qcow2.0123.partial",  # not a token
        tmp_path / "img.qcow2.0123456789abcdef.partial",  # no leading dot
        tmp_path / ".osbake-notatoken.lock",
        tmp_path / "notes.txt",
    ]
    for path in keep:
        path.write_text("mine")
    folder = tmp_path / partial_name("dir", DEAD)
    folder.mkdir()  # osbake never writes a folder under a partial name
    assert reap_partials(tmp_path) == []
    assert all(p.exists() for p in keep) and folder.is_dir()


def test_a_missing_folder_is_not_an_error(tmp_path: Path) -> None:
    assert reap_partials(tmp_path / "nothing-here") == []
