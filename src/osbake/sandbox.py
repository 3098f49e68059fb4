"""The only code that enters an image tree or mounts anything.

Two things live here:

- `isolate(fn)` runs a build in its own namespaces: a private mount namespace and
  a PID namespace whose first process is the build. Whatever the build mounts or
  starts dies with it, even on SIGKILL, so a failed or killed build leaves no
  mounts and no processes. As an unprivileged user it first enters a user
  namespace where the user is root and the rest of the ids come from the user's
  /etc/subuid and /etc/subgid ranges (the same mapping mmdebstrap's unshare mode
  uses), so the rest of osbake runs the same way as under real root.

- `run_in_tree(...)` runs a command inside an image tree with bubblewrap: the tree
  as /, a fresh /proc and /dev, the host's /sys read-only, the host's resolver,
  the shared package cache and any extra binds, in a PID namespace that dies with
  osbake.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
import select
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from osbake import run as runner
from osbake.errors import HostError, SandboxError
from osbake.events import Events

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
BINFMT_MISC = "/proc/sys/fs/binfmt_misc"
PR_SET_PDEATHSIG = 1

# The PATH of every command run in the tree.
TREE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where osbake puts what phase scripts may read (elements, staged files) in the image.
RUN_DIR = "/run/osbake"
# What a command in the tree keeps of real root's capabilities: what package
# installation needs (ownership, modes, file capabilities, dropping to _apt). Not
# CAP_DAC_READ_SEARCH (open_by_handle_at reads any host file), CAP_SYS_ADMIN
# (mounts), CAP_MKNOD (a device node of a host disk), CAP_SYS_RAWIO, CAP_SYS_PTRACE,
# CAP_SYS_MODULE or CAP_NET_ADMIN. In a user namespace (rootless) capabilities only
# reach what the namespace owns, so nothing is dropped there.
TREE_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(
            f"{what} failed: {os.strerror(err)}",
            hint="osbake needs unprivileged user namespaces (or root); "
            "check 'sysctl user.max_user_namespaces' and that no "
            "seccomp profile blocks unshare()",
        )


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int


def subid_range(user: str, path: Path) -> IdRange | None:
    """The first range of subordinate ids of `user` in /etc/subuid or /etc/subgid."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    uid = str(pwd.getpwnam(user).pw_uid) if user else ""
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, uid):
            try:
                return IdRange(int(parts[1]), int(parts[2]))
            except ValueError:
                continue
    return None


def free_range(count: int = 65536) -> str:
    """A range of subordinate ids that no one in /etc/subuid or /etc/subgid has yet."""
    end = 100000
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                end = max(end, int(parts[1]) + int(parts[2]))
    return f"{end}-{end + count - 1}"


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace where it was mapped to root."""
    try:
        text = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    return text[:3] != ["0", "0", "4294967295"]


def become_root() -> None:
    """Enter a user namespace as root with the user's subordinate ids mapped (rootless)."""
    if os.geteuid() == 0:
        return
    user = pwd.getpwuid(os.getuid()).pw_name
    uids = subid_range(user, Path("/etc/subuid"))
    gids = subid_range(user, Path("/etc/subgid"))
    if uids is None or gids is None or uids.count < 65536 or gids.count < 65536:
        raise HostError(
            f"rootless builds need at least 65536 subordinate user and group ids for "
            f"'{user}' in /etc/subuid and /etc/subgid",
            hint=f"as root: usermod --add-subuids {free_range()} --add-subgids {free_range()} "
            f"{user}",
        )
    for tool in ("newuidmap", "newgidmap"):
        runner.require_tool(tool)
    uid, gid = os.getuid(), os.getgid()
    ready_r, ready_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the forked helper
        os.close(ready_w)
        os.read(ready_r, 1)
        parent = str(os.getppid())
        ok = True
        for tool, own, sub in (("newuidmap", uid, uids), ("newgidmap", gid, gids)):
            result = runner.run(
                [tool, parent, "0", str(own), "1", "1", str(sub.start), str(sub.count)], check=False
            )
            ok = ok and result.returncode == 0
        os._exit(0 if ok else 1)
    os.close(ready_r)
    try:
        _check(_libc().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    finally:
        os.write(ready_w, b"x")
        os.close(ready_w)
    _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise HostError(
            f"newuidmap/newgidmap could not map the ids of '{user}'",
            hint="check /etc/subuid and /etc/subgid and that newuidmap is "
            "setuid root (package uidmap)",
        )
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.environ["HOME"] = pwd.getpwuid(uid).pw_dir
    os.environ["OSBAKE_ROOTLESS"] = "1"


def rootless() -> bool:
    """Whether this build runs without real root (inside our own user namespace)."""
    return os.environ.get("OSBAKE_ROOTLESS") == "1"


def isolate(fn: Callable[[], int]) -> int:
    """Run `fn` as the first process of new mount and PID namespaces; return its status.

    Call before any thread is started. The parent waits and forwards SIGINT and
    SIGTERM; if the parent is killed, the kernel kills the child and with it every
    process of the namespace, and the mount namespace goes away.
    """
    become_root()
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare(CLONE_NEWNS|CLONE_NEWPID)")
    sys.stdout.flush()
    sys.stderr.flush()
    # The parent holds the write end: EOF on the read end means the parent is gone.
    alive_r, alive_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the isolated build process
        code = 70
        try:
            os.close(alive_w)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if select.select([alive_r], [], [], 0)[0]:
                os._exit(code)  # the parent died before PDEATHSIG was armed
            os.close(alive_r)
            _check(
                libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private"
            )
            # The host's binfmt_misc stays visible under the new /proc: the foreign-build
            # preflight (osbake.binfmt) reads its handlers.
            binfmt = None
            if os.path.exists(f"{BINFMT_MISC}/status"):
                binfmt = os.open(BINFMT_MISC, os.O_PATH | os.O_DIRECTORY)
            # A /proc that shows this PID namespace (tools such as bwrap read /proc/self).
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            _check(libc.mount(b"proc", b"/proc", b"proc", flags, None), "mounting /proc")
            if binfmt is not None:
                source = f"/proc/self/fd/{binfmt}".encode()
                libc.mount(source, BINFMT_MISC.encode(), None, MS_BIND, None)  # best effort
                os.close(binfmt)
            # Interruptible even when started with SIGINT ignored (e.g. from a script).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, _terminate)
            code = fn()
        except BaseException:
            sys.excepthook(*sys.exc_info())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    os.close(alive_r)

    def forward(signum: int, _frame: FrameType | None) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        os.close(alive_w)
    return os.waitstatus_to_exitcode(status) if status else 0


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass(frozen=True)
class Bind:
    """A host path made visible inside the tree."""

    source: Path
    target: str
    writable: bool = False


def run_in_tree(
    tree: Path,
    argv: Sequence[str],
    *,
    events: Events | None = None,
    env: Mapping[str, str] | None = None,
    binds: Sequence[Bind] = (),
    network: bool = True,
    resolver: bool = True,
    capture: bool = False,
    hint: str | None = None,
) -> runner.Completed:
    """Run a command inside the image tree (chrooted, namespaced, torn down after)."""
    if not (tree / "usr").is_dir():
        raise SandboxError(f"{tree} does not look like an image tree (no /usr)")
    args: list[str] = [
        "bwrap",
        "--bind",
        str(tree),
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--ro-bind",
        "/sys",
        "/sys",
        "--tmpfs",
        "/run",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--dir",
        RUN_DIR,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--chdir",
        "/",
    ]
    if not network:
        args.append("--unshare-net")
    if os.geteuid() == 0 and not in_user_namespace():
        args += ["--cap-drop", "ALL"]
        for capability in TREE_CAPABILITIES:
            args += ["--cap-add", capability]
    if resolver:
        args += _resolver_binds(tree)
    for bind in binds:
        args += ["--bind" if bind.writable else "--ro-bind", str(bind.source), bind.target]
    args += ["--", *argv]
    full_env = {
        "PATH": TREE_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        **(env or {}),
    }
    return runner.run(args, events=events, env=full_env, clear_env=True, capture=capture, hint=hint)


def _resolver_binds(tree: Path) -> list[str]:
    """Bind the host's resolv.conf where the image's /etc/resolv.conf points."""
    host = Path("/etc/resolv.conf")
    if not host.exists():
        return []
    inside = tree / "etc" / "resolv.conf"
    target = "/etc/resolv.conf"
    if inside.is_symlink():
        link = os.readlink(inside)
        resolved = os.path.normpath(os.path.join("/etc", link))
        if not resolved.startswith(("/run/", "/tmp/")):
            return []  # points into the tree itself: leave it alone
        return ["--dir", os.path.dirname(resolved), "--ro-bind", str(host.resolve()), resolved]
    if not inside.exists():
        return []
    return ["--ro-bind", str(host.resolve()), target]


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace, deepest first."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].encode().decode("unicode_escape")
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Remove a build tree: unmount what a killed tool left mounted in it, then delete.

    Runs inside the build's namespace, so subordinate-owned files go too; the
    unmounting first keeps `rm` from reaching through a bind mount (such as the
    shared package cache) into the host.
    """
    if not path.exists() and not path.is_symlink():
        return
    for mount_point in mounts_below(path):
        runner.run(["umount", "--lazy", mount_point], check=False)
    runner.run(["rm", "-rf", "--one-file-system", "--", str(path)])


@contextlib.contextmanager
def hidden(tree: Path, paths: Sequence[str]) -> Iterator[None]:
    """Show the folders `paths` of the tree as empty while the block runs.

    Used to make one partition's file system from the tree without the contents of
    the others, in the build's own mount namespace. Each folder is covered by its
    own empty folder of ONE read-only tmpfs (bind mounts), never by a tmpfs of its
    own: every tmpfs's root has inode number 1, and `mkfs.btrfs --rootdir` takes a
    source's inode number for the image's, so two hidden folders (/boot/efi and
    /var on a btrfs root) would become one directory with two names, and the ESP
    would be mounted on /var at boot. Folders of one tmpfs have distinct numbers.
    """
    targets = [tree / path.lstrip("/") for path in paths]
    targets = [target for target in targets if target.is_dir()]
    if not targets:
        yield
        return
    holder = Path(tempfile.mkdtemp(prefix="osbake-hidden-"))
    mounted: list[str] = []
    try:
        runner.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755,size=64k", "osbake-hidden", str(holder)]
        )
        mounted.append(str(holder))
        for number in range(len(targets)):
            (holder / str(number)).mkdir(mode=0o755)
        runner.run(["mount", "-o", "remount,ro", str(holder)])
        for number, target in enumerate(targets):
            runner.run(["mount", "--bind", str(holder / str(number)), str(target)])
            mounted.append(str(target))
        yield
    finally:
        for mount_point in reversed(mounted):
            runner.run(["umount", mount_point], check=False)
        with contextlib.suppress(OSError):
            holder.rmdir()


def mount_overlay(
    target: Path, lowers: Sequence[Path], upper: Path | None = None, work: Path | None = None
) -> None:
    """Stack `lowers` (top first) at `target`; writes go to `upper` (read-only without).

    Layers are made once and then never written: the step cache (osbake.cache)
    depends on it. Options that would make a layer depend on the mount it was
    written under (redirects, metadata-only copies, the index) are off.
    """
    if not lowers:
        raise SandboxError("an overlay needs at least one lower layer")
    target.mkdir(parents=True, exist_ok=True)
    options = [
        "lowerdir=" + ":".join(str(p) for p in lowers),
        "redirect_dir=nofollow",  # "off" may still follow, which userxattr refuses
        "metacopy=off",
        "index=off",
        "xino=off",
    ]
    if upper is not None:
        assert work is not None
        options += [f"upperdir={upper}", f"workdir={work}"]
    if rootless():
        options.append("userxattr")  # trusted.* xattrs need real root
    if upper is None and len(lowers) == 1:
        # overlayfs wants two lowers without an upper; a bind does the same read-only.
        runner.run(["mount", "--bind", "-o", "ro", str(lowers[0]), str(target)])
        runner.run(["mount", "-o", "remount,bind,ro", str(target)])
        return
    runner.run(
        ["mount", "-t", "overlay", "osbake", "-o", ",".join(options), str(target)],
        hint="the kernel needs overlayfs (and, rootless, Linux 5.11 or newer)",
    )


def unmount(target: Path) -> None:
    """Unmount `target` and anything mounted below it."""
    for mount_point in mounts_below(target):
        runner.run(["umount", mount_point], check=False)
