"""A foreign build starts the host's programs where the tree has the same version:
which ones, where they go, and that a staged program runs with only its folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from osbake.distros import host_programs

pytestmark = pytest.mark.real_subprocess

STATUS = """\
Package: coreutils
Essential: yes
Status: install ok installed
Architecture: arm64
Version: 9.1-1
Description: GNU core utilities
 Version: 1.0 (a continuation line that says Version)

Package: sed
Status: install ok installed
Version: 4.9-1+deb12u1

Package: grep
Status: deinstall ok config-files
Version: 3.8-5

Package: findutils
Status: install ok installed
Version: 4.9.0-4
"""


def tree_with(tmp_path: Path, status: str) -> Path:
    tree = tmp_path / "tree"
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(status)
    (tree / "usr/bin").mkdir(parents=True)
    return tree


def test_only_installed_packages_count(tmp_path: Path) -> None:
    versions = host_programs.installed_versions(tree_with(tmp_path, STATUS))
    assert versions == {"coreutils": "9.1-1", "sed": "4.9-1+deb12u1", "findutils": "4.9.0-4"}


def test_a_program_runs_natively_only_where_the_versions_are_the_same() -> None:
    tree = {"coreutils": "9.1-1", "sed": "4.9-1+deb12u1", "findutils": "4.9.0-4"}
    host = {"coreutils": "9.1-1", "sed": "4.9-1", "grep": "3.8-5", "findutils": "4.9.0-4"}
    names = host_programs.matching(tree, host)
    assert "readlink" in names and "find" in names
    assert "sed" not in names  # a newer sed in the tree
    assert "grep" not in names  # not installed in the tree


def test_mkinitramfs_runs_with_them_first_on_the_path_it_sets(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, STATUS)
    (tree / "usr/sbin").mkdir()
    script = "#!/bin/sh\n\numask 0022\nexport PATH='/usr/bin:/sbin:/bin'\n\n# c\n"
    (tree / "usr/sbin/mkinitramfs").write_text(script)
    staged = tmp_path / "staged"
    staged.mkdir()
    programs = host_programs.Programs(staged, ("readlink",))
    binds = programs.for_mkinitramfs(tree)
    assert [(b.source, b.target) for b in binds] == [
        (staged, "/run/osbake/native"),
        (staged / "mkinitramfs", "/usr/sbin/mkinitramfs"),
    ]
    assert (staged / "mkinitramfs").read_text() == script.replace(
        "PATH='/usr/bin", "PATH='/run/osbake/native/bin:/usr/bin"
    )
    assert (tree / "usr/sbin/mkinitramfs").read_text() == script  # the tree's is unchanged
    assert programs.path()["PATH"].startswith("/run/osbake/native/bin:")
    # A mkinitramfs that sets PATH some other way runs with the tree's programs only.
    (tree / "usr/sbin/mkinitramfs").write_text('#!/bin/sh\nPATH="/usr/bin"\n')
    assert programs.for_mkinitramfs(tree) == []


def test_a_host_program_copied_into_the_initramfs_is_found(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed: make setup installs it")
    root = tmp_path / "root"
    for name in ("usr/bin/kmod", "run/osbake/native/bin/grep", "etc/x"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * 5)
    names = "usr\nusr/bin\nusr/bin/kmod\netc/x\nrun/osbake/native/bin/grep\n"
    archive = tmp_path / "a.cpio"
    with archive.open("wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"], input=names.encode(), cwd=root,
            stdout=out, check=True,
        )  # fmt: skip
    assert host_programs.leaked(archive) == ["run/osbake/native/bin/grep"]
    (root / "run").rename(tmp_path / "gone")
    with archive.open("wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"], input=b"usr/bin/kmod\netc/x\n", cwd=root,
            stdout=out, check=True,
        )  # fmt: skip
    assert host_programs.leaked(archive) == []


def test_turned_off_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSBAKE_HOST_PROGRAMS", "0")
    assert host_programs.prepare(tree_with(tmp_path, STATUS), tmp_path / "work") is None


def test_nothing_when_no_version_is_the_hosts(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, "Package: coreutils\nStatus: install ok installed\nVersion: 0\n")
    assert host_programs.prepare(tree, tmp_path / "work") is None


def test_a_staged_program_runs_with_nothing_of_the_host_but_its_folder(tmp_path: Path) -> None:
    """The staged readlink and modinfo run in a root that has no /usr/lib of the host."""
    for tool in ("patchelf", "bwrap", "dpkg-query"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: make setup installs it")
    wanted = ["coreutils", "kmod"]
    host = host_programs.host_versions(wanted)
    if set(host) != set(wanted):
        pytest.skip("the host has no coreutils or kmod package (dpkg-query)")
    status = "".join(
        f"Package: {p}\nStatus: install ok installed\nVersion: {v}\n\n" for p, v in host.items()
    )
    tree = tree_with(tmp_path, status)
    programs = host_programs.prepare(tree, tmp_path / "work")
    assert programs is not None
    assert {"readlink", "kmod", "basename"} <= set(programs.names)
    empty = tmp_path / "empty"
    empty.mkdir()
    # The root is an empty folder: no /usr, no /lib64, no loader of the host's.
    for argv, expected in (
        (["readlink", "-f", "/run/osbake/native/bin/modinfo"], "/run/osbake/native/bin/kmod"),
        (["basename", "/a/b/c.ko"], "c.ko"),
        (["modinfo", "--version"], "kmod version"),
    ):
        done = subprocess.run(
            [
                "bwrap", "--bind", str(empty), "/", "--ro-bind", str(programs.folder),
                "/run/osbake/native", "--proc", "/proc", "--dev", "/dev",
                f"/run/osbake/native/bin/{argv[0]}", *argv[1:],
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
