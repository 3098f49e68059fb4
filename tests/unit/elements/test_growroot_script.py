"""The growroot element's boot script, run by the real /bin/sh against a made-up /proc
and /sys, with growpart and resize2fs replaced by scripts that record their calls."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from osbake.elements.catalog import BUILTIN_DIR

pytestmark = pytest.mark.real_subprocess

SCRIPT = BUILTIN_DIR / "growroot" / "static" / "usr" / "lib" / "osbake" / "growroot"
MIB = 2048  # sectors


@dataclass
class Machine:
    root: Path

    @property
    def calls(self) -> list[str]:
        log = self.root / "calls"
        return log.read_text().splitlines() if log.exists() else []

    def boot(self) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "GROWROOT_PROC": str(self.root / "proc"),
            "GROWROOT_SYS": str(self.root / "sys"),
            "GROWROOT_STATE": str(self.root / "state"),
        }
        return subprocess.run(
            ["/bin/sh", str(SCRIPT)], env=env, capture_output=True, text=True, check=False
        )


def machine(tmp_path: Path, *, disk: int, start: int, size: int, fstype: str = "ext4") -> Machine:
    """A disk `vda` of `disk` sectors whose partition 3 (`vda3`, at `start`, `size`
    sectors) is mounted on /; growpart grows vda3 to the disk's end."""
    sys_block = tmp_path / "sys" / "devices" / "virtio" / "block" / "vda"
    (sys_block / "vda3").mkdir(parents=True)
    (sys_block / "size").write_text(f"{disk}\n")
    for name, value in {"partition": 3, "start": start, "size": size}.items():
        (sys_block / "vda3" / name).write_text(f"{value}\n")
    links = tmp_path / "sys" / "class" / "block"
    links.mkdir(parents=True)
    (links / "vda").symlink_to(sys_block)
    (links / "vda3").symlink_to(sys_block / "vda3")
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        f"25 1 254:3 / / rw,relatime shared:1 - {fstype} /dev/vda3 rw,discard\n"
        "30 25 254:1 / /boot/efi rw,relatime shared:2 - vfat /dev/vda1 rw\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    tools = {
        "growpart": f'echo "growpart $*" >> {calls}\n'
        f"echo $(( {disk} - {start} - 34 )) > {sys_block / 'vda3' / 'size'}\n",
        "resize2fs": f'echo "resize2fs $*" >> {calls}\n',
        "btrfs": f'echo "btrfs $*" >> {calls}\n',
    }
    for tool, body in tools.items():
        (bin_dir / tool).write_text("#!/bin/sh\n" + body)
        os.chmod(bin_dir / tool, 0o755)
    return Machine(tmp_path)


def test_a_bigger_disk_grows_the_partition_then_the_file_system(tmp_path: Path) -> None:
    vm = machine(tmp_path, disk=8192 * MIB, start=129 * MIB, size=688 * MIB)
    result = vm.boot()
    assert result.returncode == 0, result.stderr
    assert "growroot: grew partition 3 of /dev/vda" in result.stdout
    assert vm.calls == ["growpart /dev/vda 3", "resize2fs /dev/vda3"]
    grown = 8192 * MIB - 129 * MIB - 34
    assert (tmp_path / "state" / "growroot").read_text() == f"/dev/vda3 {grown}\n"


def test_later_boots_start_no_program_when_nothing_changed(tmp_path: Path) -> None:
    vm = machine(tmp_path, disk=8192 * MIB, start=129 * MIB, size=688 * MIB)
    vm.boot()
    again = vm.boot()
    assert again.returncode == 0, again.stderr
    assert "already fills the disk" in again.stdout
    assert vm.calls == ["growpart /dev/vda 3", "resize2fs /dev/vda3"]  # nothing more


def test_a_disk_the_image_fills_resizes_once_without_growpart(tmp_path: Path) -> None:
    """The first boot of an image on a disk of its own size (or grown by `osbake deploy
    --grow`): the file system may still be smaller than its partition."""
    vm = machine(tmp_path, disk=817 * MIB + 34, start=129 * MIB, size=688 * MIB)
    first = vm.boot()
    assert "already fills the disk" in first.stdout
    assert vm.calls == ["resize2fs /dev/vda3"]
    vm.boot()
    assert vm.calls == ["resize2fs /dev/vda3"]


def test_a_partition_grown_since_the_last_boot_is_resized_again(tmp_path: Path) -> None:
    vm = machine(tmp_path, disk=817 * MIB + 34, start=129 * MIB, size=688 * MIB)
    vm.boot()
    (tmp_path / "sys" / "devices" / "virtio" / "block" / "vda" / "vda3" / "size").write_text(
        f"{700 * MIB}\n"
    )
    vm.boot()
    assert vm.calls == ["resize2fs /dev/vda3", "resize2fs /dev/vda3"]


def test_btrfs_is_grown_by_btrfs(tmp_path: Path) -> None:
    vm = machine(tmp_path, disk=8192 * MIB, start=129 * MIB, size=688 * MIB, fstype="btrfs")
    vm.boot()
    assert vm.calls == ["growpart /dev/vda 3", "btrfs filesystem resize max /"]


def test_a_root_that_is_not_a_partition_is_left_alone(tmp_path: Path) -> None:
    vm = machine(tmp_path, disk=8192 * MIB, start=129 * MIB, size=688 * MIB)
    mountinfo = tmp_path / "proc" / "self" / "mountinfo"
    mountinfo.write_text(mountinfo.read_text().replace("/dev/vda3", "/dev/vda"))
    result = vm.boot()
    assert result.returncode == 0
    assert "/ is on /dev/vda, not a partition; nothing to do" in result.stdout
    assert vm.calls == []


def test_a_failing_growpart_fails_the_unit(tmp_path: Path) -> None:
    vm = machine(tmp_path, disk=8192 * MIB, start=129 * MIB, size=688 * MIB)
    (tmp_path / "bin" / "growpart").write_text("#!/bin/sh\nexit 2\n")
    result = vm.boot()
    assert result.returncode == 2
    assert "growroot: growpart failed (2)" in result.stderr
    assert not (tmp_path / "state" / "growroot").exists()


def test_growpart_keeps_its_temporary_files_out_of_tmp() -> None:
    """/tmp is emptied by systemd-tmpfiles-setup while growroot runs early in the boot:
    growpart's lock file there vanished (the btrfs e2e grow failed on it)."""
    unit = BUILTIN_DIR / "growroot" / "static" / "etc" / "systemd" / "system"
    text = (unit / "osbake-growroot.service").read_text()
    assert "RuntimeDirectory=osbake-growroot\n" in text
    assert "Environment=TMPDIR=/run/osbake-growroot\n" in text
