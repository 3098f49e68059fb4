"""The same build as an unprivileged user: user namespaces and subordinate ids, no root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbake.manifest import file_sha256, load_manifest
from tests import shared_folders
from tests.conftest import EXAMPLES, REPO, ImageBuilds

pytestmark = pytest.mark.e2e

USER = "osbake-test"
SYSTEM_PYTHON = "/usr/bin/python3"


def ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
        subprocess.run(
            ["usermod", "--add-subuids", "200000-265535", "--add-subgids", "200000-265535", USER],
            check=True,
        )
        return pwd.getpwnam(USER)


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A folder the test user can reach (pytest's own temporary folders are root-only)."""
    folder = shared_folders.claim("osbake-rootless-")
    yield folder.path
    shared_folders.release(folder)


@pytest.fixture(scope="module")
def rootless_osbake(shared_dir: Path) -> Path:
    """osbake installed where the unprivileged user can run it (the dev venv may be in /root)."""
    if os.geteuid() != 0:
        pytest.skip("creating the test user needs root (CI runs the tests as root)")
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} is missing: install python3 and python3-venv")
    ensure_user()
    venv = shared_dir / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    source = shared_dir / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "out", "build", "*.egg-info", "__pycache__", ".stamps", "*_cache"
        ),
    )
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(source)], check=True, capture_output=True
    )
    return venv / "bin" / "osbake"


@pytest.fixture(scope="module")
def work(shared_dir: Path) -> Path:
    """The examples, in a folder that belongs to the test user."""
    user = ensure_user()
    folder = shared_dir / "work"
    folder.mkdir()
    shutil.copytree(EXAMPLES, folder / "examples")
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(folder)], check=True)
    return folder


def build_as_user(osbake: Path, work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # runuser keeps the environment: root's cache settings are not the user's, but the
    # test run's cache budget is (tests/conftest.py; the user's cache grew to 13 GB).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OSBAKE_") or k == "OSBAKE_CACHE_MAX"
    }
    return subprocess.run(
        ["runuser", "-u", USER, "--", str(osbake), "build", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=work,
        env=env,
    )


def test_build_as_unprivileged_user(
    rootless_osbake: Path, work: Path, image_builds: ImageBuilds
) -> None:
    user = pwd.getpwnam(USER)
    result = build_as_user(
        rootless_osbake,
        work,
        str(work / "examples" / "debian-minimal.yaml"),
        "-o",
        str(work / "out"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = load_manifest(work / "out" / "debian-minimal.manifest.json")
    assert manifest.build.rootless is True
    tarball = work / "out" / "debian-minimal.tar.zst"
    assert file_sha256(tarball) == manifest.artifacts[0].sha256
    assert tarball.stat().st_uid == user.pw_uid  # artifacts belong to the user
    listing = subprocess.run(
        ["tar", "--numeric-owner", "-tvf", str(tarball)], capture_output=True, text=True, check=True
    ).stdout
    owners = {line.split()[5]: line.split()[1] for line in listing.splitlines()}
    assert owners["./etc/shadow"] == "0/42"  # root:shadow inside, not the user's ids
    assert owners["./home/debian/"] == "1000/1000"
    # The same bytes as root's build of the recipe (owners, modes, times, contents).
    as_root = image_builds.build("debian-minimal.yaml") / "debian-minimal.tar.zst"
    assert file_sha256(tarball) == file_sha256(as_root)


def test_cloud_image_built_as_unprivileged_user_boots(
    rootless_osbake: Path, work: Path, tmp_path: Path
) -> None:
    """The disk image (partitions, file systems, GRUB) made without root, booted with UEFI."""
    recipe = work / "examples" / "cloud-qcow2.yaml"
    recipe.write_text("extends: debian-cloud.yaml\noutputs: [qcow2]\n")
    shutil.chown(recipe, USER, USER)
    result = build_as_user(rootless_osbake, work, str(recipe), "-o", str(work / "cloud"))
    assert result.returncode == 0, result.stderr[-3000:]
    image = work / "cloud" / "debian-cloud.qcow2"
    manifest = load_manifest(work / "cloud" / "debian-cloud.manifest.json")
    assert manifest.build.rootless is True
    assert file_sha256(image) == manifest.artifacts[0].sha256
    assert image.stat().st_uid == pwd.getpwnam(USER).pw_uid
    booted = subprocess.run(
        [
            *(sys.executable, "-m", "osbake", "boot", str(image), "--firmware", "uefi"),
            *("--accel", "tcg", "--expect", "login:", "--timeout", "400"),
            *("--console-log", str(tmp_path / "console.log")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert booted.returncode == 0, booted.stderr[-2000:] + console[-2000:]


def test_lvm_image_built_as_unprivileged_user(rootless_osbake: Path, work: Path) -> None:
    """examples/debian-lvm.yaml without root: osbake writes the volume group itself, and
    LVM's own tools read it (tests/e2e/test_lvm_root.py boots the same recipe)."""
    from tests.e2e.test_lvm_root import lvm_report

    result = build_as_user(
        rootless_osbake, work, str(work / "examples" / "debian-lvm.yaml"), "-o", str(work / "lvm")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = load_manifest(work / "lvm" / "debian-lvm.manifest.json")
    assert manifest.build.rootless is True and manifest.disk is not None
    group = manifest.disk["volume_groups"][0]
    pv = next(p for p in manifest.disk["partitions"] if p["type"] == "lvm")
    raw = work / "lvm" / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(work / "lvm" / "debian-lvm.qcow2"), str(raw)],
        check=True,
    )
    device = subprocess.run(
        ["losetup", "--read-only", "--find", "--show", "--offset", str(pv["start"]),
         "--sizelimit", str(pv["size"]), str(raw)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        lvs = lvm_report("lvs", device, "vg_name,lv_name,lv_uuid,lv_size")
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
        raw.unlink()
    assert lvs == [
        {"vg_name": "vg0", "lv_name": v["name"], "lv_uuid": v["lv_uuid"], "lv_size": str(v["size"])}
        for v in group["volumes"]
    ]


@pytest.mark.slow
def test_arm64_tree_built_as_unprivileged_user(rootless_osbake: Path, work: Path) -> None:
    """A foreign tree without root: mmdebstrap's user namespace runs arm64's maintainer
    scripts through the host's qemu-user binfmt handler (F flag), owners stay root's."""
    recipe = work / "examples" / "minimal-arm64.yaml"
    recipe.write_text("extends: debian-minimal.yaml\narch: [arm64]\n")
    shutil.chown(recipe, USER, USER)
    result = build_as_user(rootless_osbake, work, str(recipe), "-o", str(work / "arm64"))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = load_manifest(work / "arm64" / "debian-minimal.manifest.json")
    assert manifest.build.rootless is True and manifest.arch == "arm64"
    tarball = work / "arm64" / "debian-minimal.tar.zst"
    assert file_sha256(tarball) == manifest.artifacts[0].sha256
    listing = subprocess.run(
        ["tar", "--numeric-owner", "-tvf", str(tarball)], capture_output=True, text=True, check=True
    ).stdout
    owners = {line.split()[5]: line.split()[1] for line in listing.splitlines()}
    assert owners["./etc/shadow"] == "0/42"
    ls = subprocess.run(
        ["tar", "-xOf", str(tarball), "./usr/bin/ls"], capture_output=True, check=True
    ).stdout
    assert ls[:4] == b"\x7fELF" and int.from_bytes(ls[18:20], "little") == 183  # EM_AARCH64
