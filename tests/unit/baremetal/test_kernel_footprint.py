"""The manifest's kernel footprint, measured in a fake image tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbake.distros import Package
from osbake.distros import kernels as kernels_mod
from osbake.distros.debian import Debian, _kernel_package
from osbake.distros.kernels import booted_release, measure

RELEASE = "6.1.0-26-amd64"


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def tree_with_kernel(root: Path, release: str = RELEASE, *, symlink: bool = True) -> Path:
    tree = root / "tree"
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "lib").symlink_to("usr/lib")  # merged /usr, as Debian has it
    write(tree / "boot" / f"vmlinuz-{release}", 1000)
    write(tree / "boot" / f"initrd.img-{release}", 300)
    modules = tree / "usr/lib/modules" / release
    write(modules / "kernel/drivers/net/e1000e.ko.zst", 40)
    write(modules / "kernel/fs/ext4.ko", 60)
    write(modules / "modules.dep", 7)
    if symlink:
        (tree / "vmlinuz").symlink_to(f"boot/vmlinuz-{release}")
    return tree


def test_sizes_add_up(tmp_path: Path) -> None:
    footprint = measure(tree_with_kernel(tmp_path), "generic")
    assert footprint is not None
    assert footprint.release == RELEASE
    assert (footprint.vmlinuz, footprint.initrd) == (1000, 300)
    assert footprint.modules == 107  # every file under /lib/modules/<release>
    assert footprint.module_count == 2
    assert footprint.total == 1407
    data = footprint.to_dict()
    assert data["flavour"] == "generic"
    assert "trim" not in data  # only a server kernel has one


def test_no_kernel_means_no_footprint(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    assert measure(tmp_path, "none") is None


def test_the_booted_kernel_is_the_newest_without_a_symlink(tmp_path: Path) -> None:
    tree = tree_with_kernel(tmp_path, "6.1.0-9-amd64", symlink=False)
    write(tree / "boot/vmlinuz-6.1.0-10-amd64", 5)
    assert booted_release(tree) == "6.1.0-10-amd64"  # 10 > 9, not "1" < "9"


def test_the_symlink_decides(tmp_path: Path) -> None:
    tree = tree_with_kernel(tmp_path, "6.1.0-9-amd64")
    write(tree / "boot/vmlinuz-6.1.0-10-amd64", 5)
    assert booted_release(tree) == "6.1.0-9-amd64"


def test_modules_outside_the_tree_are_not_counted(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree / f"boot/vmlinuz-{RELEASE}", 10)
    outside = tmp_path / "host-modules"
    write(outside / RELEASE / "kernel/x.ko", 999)
    (tree / "lib").mkdir()
    os.symlink(outside, tree / "lib/modules")  # an absolute link leaving the tree
    footprint = measure(tree, "generic")
    assert footprint is not None and footprint.modules == 0


def test_server_trim_comes_from_the_elements_configuration(tmp_path: Path) -> None:
    tree = tree_with_kernel(tmp_path)
    conf = tree / kernels_mod.SERVER_KERNEL_CONF
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "# Written by osbake's server-kernel element\n"
        'FAMILIES="sound media wireless"\n'
        'EXCLUDE="sound drivers/media"\n'
        "COMPRESS=zstd\n"
    )
    state = tree / kernels_mod.SERVER_KERNEL_STATE / f"{RELEASE}.removed"
    state.parent.mkdir(parents=True)
    state.write_text("drivers/hid/hid-prodikeys.ko needs snd\nnet/batman-adv.ko needs cfg80211\n")
    footprint = measure(tree, "server")
    assert footprint is not None
    assert footprint.trim == {
        "families": ["sound", "media", "wireless"],
        "compress": "zstd",
        "removed_dependents": 2,
    }


def test_the_package_comes_from_dpkgs_file_lists(tmp_path: Path) -> None:
    tree = tree_with_kernel(tmp_path)
    info = tree / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "linux-image-cloud-amd64.list").write_text("/usr/share/doc/x\n")
    (info / f"linux-image-{RELEASE}.list").write_text(f"/boot\n/boot/vmlinuz-{RELEASE}\n")
    assert _kernel_package(tree, RELEASE) == f"linux-image-{RELEASE}"
    assert _kernel_package(tree, "6.1.0-99-amd64") is None


def test_debian_reports_package_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tree_with_kernel(tmp_path)
    info = tree / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / f"linux-image-{RELEASE}.list").write_text(f"/boot/vmlinuz-{RELEASE}\n")
    package = Package(f"linux-image-{RELEASE}", "6.1.112-1", "amd64", "linux", "6.1.112-1")
    monkeypatch.setattr(Debian, "installed_packages", lambda self, tree: [package])
    distro = Debian.__new__(Debian)
    distro.recipe = type("R", (), {"kernel": "server"})()  # type: ignore[assignment]
    data = distro.kernel_footprint(tree)
    assert data is not None
    assert data["package"] == f"linux-image-{RELEASE}"
    assert data["version"] == "6.1.112-1"
    assert data["flavour"] == "server"
