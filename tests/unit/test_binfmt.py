"""The foreign-build preflight: binfmt_misc's handler for the target, with the F flag,
or an error that names the arch's line and gives the commands that fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbake import binfmt
from osbake.arch import Arch
from osbake.cli import main
from osbake.errors import HostError, Location

ENABLED = (
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\n"
    "offset 0\nmagic 7f454c460201010000000000000000000200b700\n"
)


def proc(tmp_path: Path, **handlers: str) -> Path:
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()
    (folder / "status").write_text("enabled\n")
    for name, text in handlers.items():
        (folder / name.replace("_", "-")).write_text(text)
    return folder


def refused(folder: Path, target: Arch = Arch.ARM64) -> HostError:
    with pytest.raises(HostError) as info:
        binfmt.check_runs(target, host=Arch.AMD64, folder=folder, location=Location(None, 3))
    assert info.value.location is not None and info.value.location.line == 3
    return info.value


def test_the_hosts_own_arch_and_what_its_cpu_runs_need_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    binfmt.check_runs(Arch.AMD64, host=Arch.AMD64, folder=missing)
    binfmt.check_runs(Arch.I386, host=Arch.AMD64, folder=missing)
    assert binfmt.needs_emulation(Arch.ARM64, Arch.AMD64)
    assert binfmt.needs_emulation(Arch.AMD64, Arch.ARM64)
    assert not binfmt.needs_emulation(Arch.I386, Arch.AMD64)


def test_an_enabled_handler_with_the_f_flag_is_enough(tmp_path: Path) -> None:
    folder = proc(tmp_path, qemu_aarch64=ENABLED.format(flags="POCF"))
    binfmt.check_runs(Arch.ARM64, host=Arch.AMD64, folder=folder)
    handler = binfmt.read_handler(folder, "qemu-aarch64")
    assert handler is not None and handler.enabled and handler.flags == "POCF"


def test_binfmt_misc_not_mounted(tmp_path: Path) -> None:
    err = refused(tmp_path / "nothing")
    assert "binfmt_misc is not mounted" in err.message
    assert err.hint is not None
    assert "mount -t binfmt_misc binfmt_misc" in err.hint
    assert "update-binfmts --enable qemu-aarch64" in err.hint


def test_no_handler_names_the_package_and_the_command(tmp_path: Path) -> None:
    err = refused(proc(tmp_path))
    assert "this amd64 host cannot run arm64 programs" in err.message
    assert "no binfmt_misc handler qemu-aarch64" in err.message
    assert err.hint is not None
    assert "apt-get install qemu-user-static binfmt-support" in err.hint
    assert "update-binfmts --enable qemu-aarch64" in err.hint


def test_a_disabled_handler(tmp_path: Path) -> None:
    folder = proc(tmp_path, qemu_aarch64=ENABLED.format(flags="F").replace("enabled", "disabled"))
    err = refused(folder)
    assert "qemu-aarch64 is disabled" in err.message
    assert err.hint is not None and "update-binfmts --enable qemu-aarch64" in err.hint


def test_a_handler_without_the_fix_binary_flag(tmp_path: Path) -> None:
    # Without F the kernel looks the emulator up inside the sandbox, where it is not.
    folder = proc(tmp_path, qemu_arm=ENABLED.format(flags="OC"))
    err = refused(folder, Arch.ARMHF)
    assert "qemu-arm has no F (fix binary) flag (flags: OC)" in err.message
    assert err.hint is not None and f"echo -1 > {folder / 'qemu-arm'}" in err.hint


def test_validate_names_the_arch_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSBAKE_BINFMT_DIR", str(proc(tmp_path)))
    monkeypatch.setattr(binfmt, "host_arch", lambda: Arch.AMD64)
    path = tmp_path / "r.yaml"
    path.write_text("name: x\narch:\n  - amd64\n  - arm64\n")
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 3
    assert f"{path}:4" in err
    assert "no binfmt_misc handler qemu-aarch64" in err
    assert "update-binfmts --enable qemu-aarch64" in err
    # With the handler, the same recipe is valid.
    (tmp_path / "binfmt_misc" / "qemu-aarch64").write_text(ENABLED.format(flags="POCF"))
    assert main(["validate", str(path)]) == 0
