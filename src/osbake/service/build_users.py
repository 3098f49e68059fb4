"""The users builds run as: never root, never the console's own user.

A worker started as root runs every build (and its boot test) as a dedicated
system user, `osbake-build` by default, in osbake's rootless mode (user
namespaces with the user's /etc/subuid and /etc/subgid ranges). With
`--concurrency N`, build slot k runs as `osbake-build-k` (k >= 2), so that two
builds at the same time cannot read each other's files. The users are made on
first use: a system account with its own home (its osbake cache), a login shell
of nologin, subordinate ids that nobody else has, and the kvm group for boot
tests. Existing users are used as they are (their subordinate ids are added if
they have none).

Builds see nothing of the console: its data folder is private to it, the
worker's token is not in the build's environment, and the build's folders are
owned by its user inside a root-owned folder.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from osbake import run as runner
from osbake import sandbox
from osbake.errors import HostError, UsageError

DEFAULT_USER = "osbake-build"
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
SUBIDS = 65536
# What a build may learn from the worker's environment: proxies, the time zone and
# osbake's own build settings; never the worker's token or the console's secrets.
PASSED_ENV = {
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
}
SECRET_ENV = {
    "OSBAKE_WORKER_TOKEN",
    "OSBAKE_ADMIN_PASSWORD",
    "OSBAKE_DATABASE_URL",
    "OSBAKE_QUEUE_URL",
    "OSBAKE_BUILD_COMMAND",
    "OSBAKE_BOOT_COMMAND",
    "OSBAKE_ROOTLESS",
}
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BuildUser:
    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def of(cls, name: str) -> BuildUser:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as this user (with its groups), killed if the worker dies."""
        return [
            *runner.orphan_guard(f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"),
            *argv,
        ]


def slot_names(base: str, count: int) -> list[str]:
    return [base if slot == 1 else f"{base}-{slot}" for slot in range(1, count + 1)]


def ensure(base: str, count: int) -> list[BuildUser]:
    """The build users of `count` slots, made as system users where they are missing."""
    if not USER_NAME.fullmatch(base) or len(base) > 28:
        raise UsageError(
            f"'{base}' is not a user name for builds",
            hint="lowercase letters, digits, '_' and '-', at most 28 characters",
        )
    if os.geteuid() != 0:
        raise UsageError(
            "only a worker started as root can run builds as another user",
            hint="start the worker as root (builds then run as --build-user), "
            "or leave --build-user out to build as this user",
        )
    users = []
    for name in slot_names(base, count):
        try:
            pwd.getpwnam(name)
        except KeyError:
            _create(name)
        user = BuildUser.of(name)
        if user.uid == 0:
            raise UsageError(f"the build user '{name}' is root", hint="give an unprivileged user")
        _ensure_subids(user)
        user.home.mkdir(parents=True, exist_ok=True)
        os.chown(user.home, user.uid, user.gid)
        user.home.chmod(0o700)
        users.append(user)
    return users


def _create(name: str) -> None:
    argv = [
        "useradd",
        "--system",
        "--user-group",
        "--create-home",
        "--home-dir",
        f"/var/lib/{name}",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "osbake builds",
    ]
    if _group_exists("kvm"):
        argv += ["--groups", "kvm"]  # boot tests may use /dev/kvm
    result = runner.run([*argv, name], check=False, capture=True)
    if result.returncode != 0:
        try:  # another worker made it at the same moment
            pwd.getpwnam(name)
        except KeyError:
            raise HostError(
                f"could not make the build user '{name}': {' '.join(result.tail[-3:])}",
                hint="make it yourself (useradd --system NAME) or give --build-user",
            ) from None


def _ensure_subids(user: BuildUser) -> None:
    uids = sandbox.subid_range(user.name, Path("/etc/subuid"))
    gids = sandbox.subid_range(user.name, Path("/etc/subgid"))
    if uids is not None and gids is not None and min(uids.count, gids.count) >= SUBIDS:
        return
    span = sandbox.free_range(SUBIDS)
    runner.run(
        ["usermod", "--add-subuids", span, "--add-subgids", span, user.name],
        hint="the build user needs subordinate ids for rootless builds",
    )


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def environment(user: BuildUser | None) -> dict[str, str]:
    """The whole environment of a build: nothing secret, nothing of the worker's user."""
    env = {"PATH": HOST_PATH, "LANG": "C.UTF-8"}
    for key, value in os.environ.items():
        if key in PASSED_ENV or (key.startswith("OSBAKE_") and key not in SECRET_ENV):
            env[key] = value
    if user is not None:
        env.pop("OSBAKE_CACHE_DIR", None)  # the build user's cache is its own (~/.cache)
        env |= {"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name}
    else:
        env["HOME"] = os.environ.get("HOME", "/")
    return env


def private_work_dir(path: Path) -> None:
    """The folder of the builds' folders: root's, traversable, not listable."""
    path.mkdir(parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise UsageError(
            f"the work folder {path} is not a folder of this user",
            hint="give --work-dir a folder that root owns",
        )
    path.chmod(0o711)


def give(path: Path, user: BuildUser) -> None:
    """Hand a folder that root filled to the build user (nothing followed through links)."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(path, user.uid, user.gid)
    path.chmod(0o700)
