"""A command in an image tree does not keep real root's dangerous capabilities."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osbake import sandbox

pytestmark = pytest.mark.integration

# Capability numbers (linux/capability.h).
CAP_MKNOD = 27
CAP_DAC_READ_SEARCH = 2
CAP_SYS_ADMIN = 21
CAP_SYS_RAWIO = 17
CAP_SYS_PTRACE = 19
CAP_CHOWN = 0
CAP_SETFCAP = 31


def _host_usr_tree(root: Path) -> tuple[Path, list[sandbox.Bind]]:
    """A tree that is the host's /usr (read-only) and nothing else."""
    tree = root / "tree"
    (tree / "usr").mkdir(parents=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        if Path("/usr", name).exists():
            (tree / name).symlink_to(f"usr/{name}")
    (tree / "etc").mkdir()
    return tree, [sandbox.Bind(Path("/usr"), "/usr")]


def _effective(tree: Path, binds: list[sandbox.Bind]) -> int:
    result = sandbox.run_in_tree(
        tree, ["grep", "^CapEff:", "/proc/self/status"], binds=binds, capture=True
    )
    return int(result.stdout.split()[1], 16)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks what real root keeps")
def test_root_keeps_only_what_packages_need(tmp_path: Path) -> None:
    tree, binds = _host_usr_tree(tmp_path)
    caps = _effective(tree, binds)
    for dropped in (CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN, CAP_MKNOD, CAP_SYS_RAWIO, CAP_SYS_PTRACE):
        assert not caps & (1 << dropped), f"capability {dropped} kept: {caps:#x}"
    for kept in (CAP_CHOWN, CAP_SETFCAP):
        assert caps & (1 << kept), f"capability {kept} dropped: {caps:#x}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks what real root keeps")
def test_root_cannot_open_host_files_by_handle(tmp_path: Path) -> None:
    """open_by_handle_at on a handle of a host file fails inside the tree."""
    tree, binds = _host_usr_tree(tmp_path)
    script = (
        "import ctypes, ctypes.util, os\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
        "buf = ctypes.create_string_buffer(8 + 128)\n"
        "ctypes.memmove(buf, (128).to_bytes(4, 'little'), 4)\n"
        "mount_id = ctypes.c_int()\n"
        "assert libc.name_to_handle_at(-100, b'/usr', buf, ctypes.byref(mount_id), 0) == 0\n"
        "fd = libc.open_by_handle_at(os.open('/usr', os.O_RDONLY), buf, 0)\n"
        "print('errno', ctypes.get_errno() if fd < 0 else 0)\n"
    )
    result = sandbox.run_in_tree(tree, ["python3", "-c", script], binds=binds, capture=True)
    assert result.stdout.decode().strip() == "errno 1", result.stdout  # EPERM
