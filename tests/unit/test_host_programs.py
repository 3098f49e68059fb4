"""A foreign build starts the host's programs where the tree has the same version:
which ones, where they go, and that a staged program runs with only its folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from osbake.distros import host_programs
from osbake.errors import CommandError, DistroError

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
    # The build stops on it, whatever the archive is called.
    folder = tmp_path / "archives"
    folder.mkdir()
    shutil.copy(archive, folder / "initrd.img-6.1.0-arm64.cpio")
    with pytest.raises(DistroError, match="copied the host's run/osbake/native/bin/grep") as e:
        host_programs.check_archives(folder)
    assert "OSBAKE_HOST_PROGRAMS=0" in (e.value.hint or "")
    (root / "run").rename(tmp_path / "gone")
    with archive.open("wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"], input=b"usr/bin/kmod\netc/x\n", cwd=root,
            stdout=out, check=True,
        )  # fmt: skip
    assert host_programs.leaked(archive) == []
    shutil.copy(archive, folder / "initrd.img-6.1.0-arm64.cpio")
    host_programs.check_archives(folder)  # nothing of the host's: no error


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
    wanted = ["coreutils", "kmod", "dpkg", "tar"]
    host = host_programs.host_versions(wanted)
    if set(host) != set(wanted):
        pytest.skip(f"the host lacks one of the packages {wanted} (dpkg-query)")
    status = "".join(
        f"Package: {p}\nStatus: install ok installed\nVersion: {v}\n\n" for p, v in host.items()
    )
    tree = tree_with(tmp_path, status)
    programs = host_programs.prepare(tree, tmp_path / "work")
    assert programs is not None
    assert {"readlink", "kmod", "basename", "dpkg-deb", "tar"} <= set(programs.names)
    assert "dpkg" not in programs.names  # it would take the host's architecture
    empty = tmp_path / "empty"
    empty.mkdir()
    # A package as dpkg unpacks it: dpkg-deb decompresses its archives and starts tar
    # (found on the PATH) for the control one.
    package = tmp_path / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN/control").write_text(
        "Package: probe\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: probe\n"
    )
    (package / "usr/share/probe").mkdir(parents=True)
    (package / "usr/share/probe/data").write_text("payload\n")
    subprocess.run(
        ["dpkg-deb", "-Zxz", "--root-owner-group", "--build", str(package), str(empty / "p.deb")],
        check=True, capture_output=True,
    )  # fmt: skip
    # The root is an empty folder: no /usr, no /lib64, no loader of the host's.
    for argv, expected in (
        (["readlink", "-f", "/run/osbake/native/bin/modinfo"], "/run/osbake/native/bin/kmod"),
        (["basename", "/a/b/c.ko"], "c.ko"),
        (["modinfo", "--version"], "kmod version"),
        (["dpkg-deb", "--fsys-tarfile", "/p.deb"], "payload"),
        (["dpkg-deb", "--control", "/p.deb", "/control"], ""),
    ):
        done = subprocess.run(
            [
                "bwrap", "--bind", str(empty), "/", "--ro-bind", str(programs.folder),
                "/run/osbake/native", "--proc", "/proc", "--dev", "/dev",
                "--setenv", "PATH", "/run/osbake/native/bin",
                f"/run/osbake/native/bin/{argv[0]}", *argv[1:],
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
    # dpkg-deb found tar on the PATH, and tar wrote the control archive's files.
    assert "Package: probe" in (empty / "control/control").read_text()


def build_deb(folder: Path, package: str, version: str) -> Path:
    """A package file with only a control file, named as apt names what it downloads."""
    root = folder / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: t <t@t>\nDescription: probe\n"
    )
    deb = folder / f"{package}_{version.replace(':', '%3a')}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
        check=True, capture_output=True,
    )  # fmt: skip
    return deb


def test_the_versions_of_the_package_files_mmdebstrap_installs(tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (a Debian host has it)")
    debs = [
        build_deb(tmp_path, "coreutils", "9.1-1"),
        build_deb(tmp_path, "sed", "4.9-1+deb12u1"),
        build_deb(tmp_path, "bash", "5.2.15-2+b7"),  # no program of its is borrowed
    ]
    assert host_programs.deb_versions(debs) == {"coreutils": "9.1-1", "sed": "4.9-1+deb12u1"}


def test_the_bootstrap_hook_binds_them_read_only_into_the_tree(tmp_path: Path) -> None:
    """mmdebstrap's extract hook: programs of the versions about to be installed."""
    for tool in ("patchelf", "dpkg-query", "dpkg-deb", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: make setup installs it")
    if os.geteuid() != 0:
        pytest.skip("binding a folder into the tree needs root (CI runs as root)")
    host = host_programs.host_versions(["sed", "grep"])
    if set(host) != {"sed", "grep"}:
        pytest.skip("the host has no sed or grep package (dpkg-query)")
    tree = tmp_path / "tree"
    archives = tree / "var/cache/apt/archives"
    archives.mkdir(parents=True)
    build_deb(archives, "sed", host["sed"])
    build_deb(archives, "grep", "0.1-1")  # not the host's version: stays emulated
    essential = " ".join(f"/var/cache/apt/archives/{deb.name}" for deb in archives.glob("*.deb"))
    line = host_programs.bootstrap_hook(tree, tmp_path / "work", essential)
    native = tree / "run/osbake/native"
    try:
        assert line == "host programs for the bootstrap: sed"
        assert (native / "bin/sed").is_file()
        assert not (native / "bin/grep").exists()
        with pytest.raises(OSError):
            (native / "x").write_text("")  # read-only
    finally:
        subprocess.run(["umount", str(native)], check=False)
    assert not (native / "bin").exists()
    # Nothing the tree could use: the versions match no package.
    assert host_programs.bootstrap_hook(tree, tmp_path / "work", "") == (
        "host programs for the bootstrap: none has the tree's version"
    )


def test_a_bootstrap_hook_that_cannot_bind_says_so_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hook runs inside mmdebstrap: a failed mount is osbake's message and status 1."""

    def refused(argv: list[str], **_: object) -> None:
        raise CommandError(argv, 32, ["mount: permission denied"])

    monkeypatch.setattr(host_programs, "stage", lambda versions, workdir: programs)
    monkeypatch.setattr(host_programs.runner, "run", refused)
    programs = host_programs.Programs(folder=tmp_path / "stage", names=("sed",))
    status = host_programs.main([str(tmp_path / "tree"), str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("osbake: host programs for the bootstrap: mount exited with status 32")
    assert "mount: permission denied" in err
    assert "hint: build again with OSBAKE_HOST_PROGRAMS=0" in err
    assert "Traceback" not in err
    # A tree it cannot write to: the same kind of message.
    monkeypatch.setattr(host_programs.runner, "run", lambda argv, **_: None)
    (tmp_path / "a-file").write_text("not a folder")
    assert host_programs.main([str(tmp_path / "a-file"), str(tmp_path / "work")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("osbake: host programs for the bootstrap: [Errno 20] Not a directory")
    assert "Traceback" not in err


def test_py3compile_runs_the_trees_script_with_the_hosts_python(tmp_path: Path) -> None:
    """The py3compile put first on PATH runs /usr/bin/py3compile with the host's build
    of the tree's Python, and so do the interpreters that script starts by path."""
    for tool in ("patchelf", "bwrap", "dpkg-query", "python3.11"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: make setup installs it")
    wanted = ["coreutils", *host_programs.python_packages("3.11")]
    host = host_programs.host_versions(wanted)
    if set(host) != set(wanted):
        pytest.skip(f"the host lacks one of the packages {wanted} (dpkg-query)")
    status = "".join(
        f"Package: {p}\nStatus: install ok installed\nVersion: {v}\n\n" for p, v in host.items()
    )
    programs = host_programs.prepare(tree_with(tmp_path, status), tmp_path / "work")
    assert programs is not None and "py3compile" in programs.names
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src/module.py").write_text("VALUE = 42\n")
    # A stand-in for Debian's script: it starts /usr/bin/python3.11, which the root
    # does not have, to byte-compile what it is given, and ends with the site module's
    # exit().
    (root / "usr/bin/py3compile").write_text(
        "import subprocess, sys\n"
        "done = subprocess.run(['/usr/bin/python3.11', '-m', 'py_compile', '-'],"
        " input=sys.argv[1].encode())\n"
        "exit(done.returncode + 3)\n"
    )
    args = [
        "bwrap", "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev",
        "--setenv", "PATH", "/run/osbake/native/bin",
    ]  # fmt: skip
    for bind in programs.binds():
        args += ["--ro-bind", str(bind.source), bind.target]
    done = subprocess.run(
        [*args, "py3compile", "/src/module.py"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 3, done.stderr
    compiled = root / "src/__pycache__/module.cpython-311.pyc"
    assert compiled.is_file()
    # The same bytes as the host's own Python writes for that file.
    again = tmp_path / "again.pyc"
    script = "import py_compile, sys; py_compile.compile(*sys.argv[1:3], dfile='/src/module.py')"
    source = str(root / "src/module.py")
    subprocess.run(["python3.11", "-c", script, source, str(again)], check=True)
    assert again.read_bytes() == compiled.read_bytes()
