"""The only place osbake starts subprocesses.

Every command is logged as a line that can be copied into a shell; its output is
streamed to the events as log lines; a failure raises `CommandError` with the
tail of the output. An interrupted command is killed with its whole process
group, so nothing keeps running behind a failed build.
"""

from __future__ import annotations

import collections
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from osbake.errors import CommandError, HostError
from osbake.events import Events

# Which Debian package provides a tool, for the hint when it is missing.
TOOL_PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "bwrap": "bubblewrap",
    "newuidmap": "uidmap",
    "newgidmap": "uidmap",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "zstd": "zstd",
    "xz": "xz-utils",
    "pigz": "pigz",
    "tar": "tar",
    "dpkg-query": "dpkg",
    "qemu-img": "qemu-utils",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mkfs.btrfs": "btrfs-progs",
    "btrfs": "btrfs-progs",
    "mkfs.xfs": "xfsprogs",
    "cryptsetup": "cryptsetup-bin",
    "xorriso": "xorriso",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "gpg": "gnupg",
    "gpgv": "gpgv",
    "setpriv": "util-linux",
    "prlimit": "util-linux",
    "mkswap": "util-linux",
    "grub-mkimage": "grub-common",
    "dpkg-deb": "dpkg",
    "patchelf": "patchelf",
}

Argv = Sequence[str | os.PathLike[str]]
TAIL_LINES = 25
DRAIN_SECONDS = 2.0


@dataclass
class Completed:
    """What a finished command left: its status, captured stdout and last lines."""

    argv: list[str]
    returncode: int
    stdout: bytes = b""
    tail: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")


def command_line(argv: Argv, env: Mapping[str, str] | None = None) -> str:
    """The command as one copy-pasteable shell line."""
    words = [shlex.quote(str(a)) for a in argv]
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join(prefix + words)


def require_tool(name: str) -> str:
    """The full path of a host tool, or a HostError that says how to get it."""
    path = which(name)
    if path is None:
        package = TOOL_PACKAGES.get(name, name)
        if name.startswith("qemu-system-"):
            # Each arch's emulator (osbake.arch) is in a qemu-system-* package of its
            # family; this one brings them all.
            package = "qemu-system"
        raise HostError(
            f"the command '{name}' is not installed on this machine",
            hint=f"install it with 'apt-get install {package}' (or run 'make setup')",
        )
    return path


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a command and everything it started; a second interrupt cannot cut this short."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                break
            except KeyboardInterrupt:
                continue  # already stopping; escalate on schedule
        if proc.returncode is not None:
            break
    _kill_leftovers(proc)


def _kill_leftovers(proc: subprocess.Popen[bytes]) -> None:
    """Kill what the command left running in its process group (nothing may stay)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(
    argv: Argv,
    *,
    events: Events | None = None,
    env: Mapping[str, str] | None = None,
    clear_env: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    input: bytes | None = None,
    capture: bool = False,
    stdout: IO[bytes] | None = None,
    check: bool = True,
    hint: str | None = None,
    log_output: bool = True,
    started: Callable[[int], None] | None = None,
) -> Completed:
    """Run a command to completion.

    Output (stdout and stderr merged) goes to `events` as log lines, unless
    `capture` keeps stdout as data or `stdout` sends it to a file; stderr is then
    the only thing logged. `env` adds to the environment (or replaces it with
    `clear_env`). `started` is told the process id (the leader of the command's
    own process group), e.g. so that another thread can stop it.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty command")
    exe = args[0] if "/" in args[0] else require_tool(args[0])
    full_env = {} if clear_env else dict(os.environ)
    full_env.update(env or {})
    if events is not None:
        events.command(command_line(args, env))

    out_target: int | IO[bytes] = stdout if stdout is not None else subprocess.PIPE
    separate_err = capture or stdout is not None
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    captured = bytearray()

    proc = subprocess.Popen(
        [exe, *args[1:]],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=out_target,
        stderr=subprocess.PIPE if separate_err else subprocess.STDOUT,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        if started is not None:
            started(proc.pid)
        if input is not None and proc.stdin is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        _pump(proc, capture, separate_err, captured, tail, events if log_output else None)
        returncode = _wait(proc)
        _kill_leftovers(proc)
    except BaseException:
        _kill_group(proc)
        raise
    result = Completed(args, returncode, bytes(captured), list(tail))
    if check and returncode != 0:
        raise CommandError(args, returncode, list(tail), hint=hint)
    return result


def _pump(
    proc: subprocess.Popen[bytes],
    capture: bool,
    separate_err: bool,
    captured: bytearray,
    tail: collections.deque[str],
    events: Events | None,
) -> None:
    sel = selectors.DefaultSelector()
    logged = proc.stderr if separate_err else proc.stdout
    partial = b""
    if logged is not None:
        sel.register(logged, selectors.EVENT_READ, "log")
    if capture and proc.stdout is not None:
        sel.register(proc.stdout, selectors.EVENT_READ, "data")
    exited_at: float | None = None
    while sel.get_map():
        ready = sel.select(timeout=0.5)
        if not ready:
            # The command exited but something it started still holds the output
            # open: stop waiting for it (the process group is killed afterwards).
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > DRAIN_SECONDS:
                break
            continue
        for key, _ in ready:
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            if key.data == "data":
                captured.extend(chunk)
                continue
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for raw in lines:
                _log_line(raw, tail, events)
    if partial:
        _log_line(partial, tail, events)
    sel.close()


def _log_line(raw: bytes, tail: collections.deque[str], events: Events | None) -> None:
    # Progress bars from tools redraw with \r; keep the last state of the line.
    line = raw.decode("utf-8", errors="replace").rstrip("\r").rsplit("\r", 1)[-1]
    tail.append(line)
    if events is not None:
        events.log(line)


class _Peak:
    kib = 0


def reset_peak_memory() -> None:
    """Start a new measurement of the commands' peak memory (e.g. for a build step)."""
    _Peak.kib = 0


def peak_memory_kib() -> int:
    """The largest peak resident memory of a command (and what it started) since the reset."""
    return _Peak.kib


def _wait(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the command and note the peak memory of its process tree."""
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped
        return proc.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)
    # Linux reports ru_maxrss in KiB, the largest of the process and its waited-for children.
    _Peak.kib = max(_Peak.kib, usage.ru_maxrss)
    return proc.returncode


def output(
    argv: Argv,
    *,
    events: Events | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    hint: str | None = None,
) -> str:
    """Run a command and return its stdout as text."""
    return run(argv, events=events, env=env, cwd=cwd, capture=True, hint=hint).text


def which(name: str) -> str | None:
    """The full path of a host tool (on PATH or in the sbin folders), or None."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def exists(name: str) -> bool:
    return which(name) is not None


class Background:
    """A command started by `start()` that runs while the caller does other work.

    Use it as a context manager (or call `stop()`): its whole process group is
    stopped when the block ends, however it ends.
    """

    def __init__(self, argv: list[str], proc: subprocess.Popen[bytes]) -> None:
        self.argv = argv
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        """The exit status, or None while it runs."""
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for it to exit; the exit status, or None if `timeout` passed first."""
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM to the process group, SIGKILL after `grace` seconds; the exit status."""
        if self._proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self._proc.pid, sig)
                except ProcessLookupError:
                    break
                if self.wait(wait) is not None:
                    break
        _kill_leftovers(self._proc)
        return self._proc.wait()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Run by `orphan_guard` after setpriv: the command goes on only if its parent is still
# the process that started it ($0).
_PARENT_ALIVE = '[ "$PPID" = "$0" ] || exit 70; exec "$@"'


def orphan_guard(*setpriv_options: str) -> list[str]:
    """A prefix that makes a command get SIGKILL when the thread that started it dies.

    setpriv(1) arms PR_SET_PDEATHSIG, after any credential change `setpriv_options`
    ask for. Arming does nothing if the parent is already gone, so a shell then
    checks that its parent is still this process before it execs the command: a
    command started just before its parent dies does not outlive it either.
    """
    return [
        require_tool("setpriv"), "--pdeathsig", "KILL", *setpriv_options, "--",
        require_tool("sh"), "-c", _PARENT_ALIVE, str(os.getpid()),
    ]  # fmt: skip


def start(
    argv: Argv,
    *,
    events: Events | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    terminal: bool = False,
) -> Background:
    """Start a long-running command and return at once (`run()` waits for the end).

    The command runs in its own process group and gets SIGKILL when the thread that
    started it dies (`orphan_guard`), so it cannot outlive osbake. Its stdout and
    stderr go to the given files (default: discarded) and stdin is /dev/null, unless
    `terminal` gives it this process's stdin, stdout and stderr (for interactive
    programs).
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty command")
    exe = args[0] if "/" in args[0] else require_tool(args[0])
    full_env = dict(os.environ)
    full_env.update(env or {})
    if events is not None:
        events.command(command_line(args, env))
    wrapper = orphan_guard()
    inherit = None if terminal else subprocess.DEVNULL
    proc = subprocess.Popen(
        [*wrapper, exe, *args[1:]],
        stdin=inherit,
        stdout=inherit if stdout is None else stdout,
        stderr=inherit if stderr is None else stderr,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    return Background(args, proc)
