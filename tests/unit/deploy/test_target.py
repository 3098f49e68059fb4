"""The checks before a deploy writes anything, on a made-up machine (/proc and /sys in a folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbake.deploy.target import Host, Target, check_target, describe_target
from osbake.errors import UsageError

MIB = 1 << 20


class FakeMachine:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc" / "self").mkdir(parents=True)
        (root / "proc" / "self" / "mountinfo").write_text("")
        (root / "proc" / "swaps").write_text("Filename Type Size Used Priority\n")
        for name in ("dev/block", "class/block", "block"):
            (root / "sys" / name).mkdir(parents=True)

    def disk(self, name: str, majmin: str, partitions: dict[str, str] | None = None) -> None:
        base = self.root / "sys" / "devices" / "block" / name
        (base / "queue").mkdir(parents=True)
        (base / "holders").mkdir()
        (base / "slaves").mkdir()
        (base / "dev").write_text(majmin + "\n")
        (base / "size").write_text(str(64 * MIB // 512))
        (base / "queue" / "logical_block_size").write_text("512")
        self._link(name, majmin, base)
        for part, part_majmin in (partitions or {}).items():
            (base / part / "holders").mkdir(parents=True)
            (base / part / "partition").write_text("1")
            (base / part / "dev").write_text(part_majmin + "\n")
            self._link(part, part_majmin, base / part)

    def _link(self, name: str, majmin: str, target: Path) -> None:
        os.symlink(target, self.root / "sys" / "dev" / "block" / majmin)
        os.symlink(target, self.root / "sys" / "class" / "block" / name)
        os.symlink(target, self.root / "sys" / "block" / name)

    def mount(self, majmin: str, source: str, mountpoint: str, fstype: str = "ext4") -> None:
        path = self.root / "proc" / "self" / "mountinfo"
        number = len(path.read_text().splitlines()) + 20
        mp = mountpoint.replace(" ", "\\040")
        line = f"{number} 1 {majmin} / {mp} rw,relatime shared:1 - {fstype} {source} rw\n"
        path.write_text(path.read_text() + line)

    def host(self) -> Host:
        return Host(self.root)


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path / "machine")


def disk_target(name: str, majmin: str, size: int = 64 * MIB) -> Target:
    return Target(Path(f"/dev/{name}"), True, size, majmin)


def check(machine: FakeMachine, target: Target, *, force: bool = False, needed: int = MIB):
    return check_target(
        target,
        image=Path("/nonexistent/image.raw"),
        needed=needed,
        force=force,
        host=machine.host(),
    )


def test_a_free_disk_passes(machine: FakeMachine) -> None:
    machine.disk("sda", "8:0", {"sda1": "8:1"})
    machine.disk("sdb", "8:16", {"sdb1": "8:17"})
    machine.mount("8:1", "/dev/sda1", "/")
    assert check(machine, disk_target("sdb", "8:16")) == []


def test_mounted_partition_blocks_its_disk(machine: FakeMachine) -> None:
    machine.disk("sdb", "8:16", {"sdb1": "8:17"})
    machine.mount("8:17", "/dev/sdb1", "/mnt/my data")
    with pytest.raises(UsageError, match="/dev/sdb1 is mounted at /mnt/my data") as caught:
        check(machine, disk_target("sdb", "8:16"))
    assert "umount /mnt/my data" in (caught.value.hint or "")
    assert "--force" in (caught.value.hint or "")


def test_force_lets_a_mounted_disk_through_with_a_note(machine: FakeMachine) -> None:
    machine.disk("sdb", "8:16", {"sdb1": "8:17"})
    machine.mount("8:17", "/dev/sdb1", "/mnt")
    notes = check(machine, disk_target("sdb", "8:16"), force=True)
    assert notes == ["forced: /dev/sdb1 is mounted at /mnt"]


def test_the_system_disk_is_refused(machine: FakeMachine) -> None:
    machine.disk("vda", "254:0", {"vda1": "254:1", "vda2": "254:2"})
    machine.mount("254:2", "/dev/vda2", "/")
    with pytest.raises(UsageError, match="the disk this system runs from"):
        check(machine, disk_target("vda", "254:0"))


def test_system_disk_under_device_mapper(machine: FakeMachine) -> None:
    machine.disk("sdc", "8:32", {"sdc2": "8:34"})
    machine.disk("dm-0", "253:0")
    (machine.root / "sys" / "devices" / "block" / "dm-0" / "slaves" / "sdc2").touch()
    machine.mount("253:0", "/dev/mapper/root", "/")
    assert machine.host().system_disks() == {"sdc": "/"}
    with pytest.raises(UsageError, match="runs from"):
        check(machine, disk_target("sdc", "8:32"))


def test_btrfs_mount_is_found_by_its_source(machine: FakeMachine) -> None:
    machine.disk("sdd", "8:48", {"sdd1": "8:49"})
    machine.mount("0:35", "/dev/sdd1", "/", fstype="btrfs")
    with pytest.raises(UsageError, match="runs from"):
        check(machine, disk_target("sdd", "8:48"))


def test_swap_and_holders(machine: FakeMachine) -> None:
    machine.disk("sde", "8:64", {"sde1": "8:65", "sde2": "8:66"})
    swaps = machine.root / "proc" / "swaps"
    swaps.write_text(swaps.read_text() + "/dev/sde1 partition 1000 0 -2\n")
    (machine.root / "sys" / "devices" / "block" / "sde" / "sde2" / "holders" / "md0").touch()
    with pytest.raises(UsageError, match="swap") as caught:
        check(machine, disk_target("sde", "8:64"))
    assert "held by md0" in caught.value.message


def test_a_partition_target_is_judged_by_itself(machine: FakeMachine) -> None:
    machine.disk("sdf", "8:80", {"sdf1": "8:81", "sdf2": "8:82"})
    machine.mount("8:81", "/dev/sdf1", "/srv")
    assert check(machine, disk_target("sdf2", "8:82")) == []
    with pytest.raises(UsageError, match="mounted at /srv"):
        check(machine, disk_target("sdf1", "8:81"))


def test_file_attached_to_a_mounted_loop_device(machine: FakeMachine, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(MIB))
    machine.disk("loop3", "7:3")
    backing = machine.root / "sys" / "devices" / "block" / "loop3" / "loop"
    backing.mkdir()
    (backing / "backing_file").write_text(f"{image}\n")
    machine.mount("7:3", "/dev/loop3", "/mnt/img")
    target = Target(image, False, MIB)
    with pytest.raises(UsageError, match="attached as /dev/loop3 and /dev/loop3 is mounted"):
        check(machine, target)


def test_too_small_cannot_be_forced(machine: FakeMachine) -> None:
    machine.disk("sdb", "8:16")
    with pytest.raises(UsageError, match="too small") as caught:
        check(machine, disk_target("sdb", "8:16", size=MIB), force=True, needed=2 * MIB)
    assert "cannot be forced" in (caught.value.hint or "")


def test_the_image_itself_is_not_a_target(machine: FakeMachine, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(MIB))
    with pytest.raises(UsageError, match="is the image itself"):
        check_target(Target(image, False, MIB), image=image, needed=MIB, host=machine.host())


def test_describe_file_targets(tmp_path: Path) -> None:
    existing = tmp_path / "disk.img"
    existing.write_bytes(bytes(4096))
    assert describe_target(existing) == Target(existing, False, 4096)
    created = describe_target(tmp_path / "new.img", 8 * MIB)
    assert (created.size, created.created) == (8 * MIB, True)
    with pytest.raises(UsageError, match="does not exist") as caught:
        describe_target(tmp_path / "missing.img")
    assert "--size" in (caught.value.hint or "")
    with pytest.raises(UsageError, match="exists already"):
        describe_target(existing, 8 * MIB)
    with pytest.raises(UsageError, match="neither a block device nor a regular file"):
        describe_target(tmp_path)
