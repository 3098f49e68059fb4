"""Running consoles for the tests: `osbake serve`, `osbake worker`, PostgreSQL and Redis.

Every server is private to the test run: temporary directories, free ports on
127.0.0.1, stopped afterwards.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests import shared_folders

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FAKE_BUILD = HERE / "service_fake_build.py"
FAKE_BOOT = HERE / "service_fake_boot.py"
ADMIN_PASSWORD = "admin-password-for-tests"
# Builds run as the build user (osbake-build), who cannot reach root's home, the
# repository's virtualenv or pytest's folders: what it runs lives in a shared folder.
SYSTEM_PYTHON = "/usr/bin/python3"
BUILD_USER = "osbake-build"


@functools.cache
def shared_dir() -> Path:
    """A folder of this test run that every user can read (removed at exit, or by the
    next run if this one is killed)."""
    folder = shared_folders.claim("osbake-console-tests-")
    atexit.register(shared_folders.release, folder)
    return folder.path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def fake_commands() -> dict[str, str]:
    """Stand-ins for `osbake build` and `osbake boot` that the build user can run."""
    folder = shared_dir()
    for script in (FAKE_BUILD, FAKE_BOOT):
        if not (folder / script.name).exists():
            shutil.copy(script, folder / script.name)
            (folder / script.name).chmod(0o755)
    return {
        "OSBAKE_BUILD_COMMAND": f"{SYSTEM_PYTHON} {folder / FAKE_BUILD.name}",
        "OSBAKE_BOOT_COMMAND": f"{SYSTEM_PYTHON} {folder / FAKE_BOOT.name}",
    }


def build_runtime() -> dict[str, str]:
    """Real `osbake build` and `osbake boot` that the build user can run.

    This checkout's virtualenv may live where only root can go (a Python under
    /root): osbake is installed once per test run into a virtualenv of the
    system's Python in the shared folder, like an operator installs it.
    """
    venv = shared_dir() / "runtime"
    python = venv / "bin" / "python"
    if not python.exists():
        source = shared_dir() / "runtime-src"
        shutil.copytree(
            REPO,
            source,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "out", "build", "*.egg-info", "__pycache__", ".stamps", "*_cache"
            ),
        )
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", str(source)],
            check=True,
            capture_output=True,
        )
    return {
        "OSBAKE_BUILD_COMMAND": f"{python} -m osbake build",
        "OSBAKE_BOOT_COMMAND": f"{python} -m osbake boot",
    }


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class RunningConsole:
    """`osbake serve` in a subprocess, with an admin API token."""

    def __init__(
        self, data: Path, *, args: list[str] = (), env: dict[str, str] | None = None
    ) -> None:  # type: ignore[assignment]
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / f"{data.name}-serve.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "osbake",
                "serve",
                "--data",
                str(data),
                "--port",
                str(self.port),
                "--admin-password",
                ADMIN_PASSWORD,
                "--tick",
                "0.5",
                *args,
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_for(self._up, 60, f"the console on {self.url} (log {self.log})")
            self.token = self.make_token("admin", "tests")
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"osbake serve exited:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/login", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def browser_login(self) -> httpx.Client:
        """A client logged in through the web form (cookie session + CSRF)."""
        client = httpx.Client(base_url=self.url, timeout=30)
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        reply = client.post(
            "/login",
            data={"csrf_token": token, "name": "admin", "password": ADMIN_PASSWORD, "next": "/"},
        )
        assert reply.status_code in (200, 303), reply.text
        client.headers["X-CSRF-Token"] = re.search(  # type: ignore[union-attr]
            r'name="csrf_token" value="([^"]+)"', client.get("/").text
        ).group(1)
        return client

    def make_token(self, role: str, name: str) -> str:
        client = self.browser_login()
        try:
            reply = client.post("/api/tokens", json={"name": name, "role": role})
            assert reply.status_code == 201, reply.text
            return str(reply.json()["token"])
        finally:
            client.close()

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"} if token != "" else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def wait_state(self, build_id: int, states: set[str], timeout: float) -> dict[str, Any]:
        with self.api() as client:

            def check() -> dict[str, Any] | None:
                build = client.get(f"/api/builds/{build_id}").json()
                return build if build["state"] in states else None

            return wait_for(check, timeout, f"build {build_id} to be {states}", every=0.3)  # type: ignore[no-any-return]

    def stop(self) -> None:
        stop_group(self.proc)


def add_configuration(
    api: httpx.Client,
    name: str,
    recipe: str | None = None,
    *,
    files: dict[str, str] | None = None,
    **fields: Any,
) -> None:
    """POST a configuration (its recipe.yaml, or all its `files`) and check it was made."""
    body = {"name": name, "files": files if files is not None else {"recipe.yaml": recipe}}
    reply = api.post("/api/configurations", json={**body, **fields})
    assert reply.status_code == 201, reply.text


def start_build(api: httpx.Client, configuration: str, **body: Any) -> int:
    """POST a build of `configuration`; its id (the first, for a matrix)."""
    reply = api.post("/api/builds", json={"configuration": configuration, **body})
    assert reply.status_code == 201, reply.text
    return int(reply.json()[0]["id"])


def start_worker(
    console: RunningConsole, env: dict[str, str] | None = None, server: str | None = None
) -> subprocess.Popen[Any]:
    """`osbake worker` for the console (or for `server`, e.g. a proxy in front of it)."""
    token = console.make_token("worker", "farm worker")
    log = console.data.parent / f"{console.data.name}-worker-{time.monotonic_ns()}.log"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "osbake",
            "worker",
            "--server",
            server or console.url,
            "--work-dir",
            str(shared_dir() / "farm-work"),
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # the token in the environment, not on the command line (other users see that)
        env={**os.environ, **(env or {}), "OSBAKE_WORKER_TOKEN": token},
    )


# -- PostgreSQL and Redis ----------------------------------------------------------------------


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name} is missing: apt-get install postgresql (requirements/apt/service.txt)"
        )
    return path


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A private PostgreSQL server; yields its URL. Runs as 'nobody' when we are root."""
    folder = Path(tempfile.mkdtemp(prefix="osbake-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    port = free_port()
    data = folder / "data"
    subprocess.run(
        [
            *as_user,
            _postgres_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "osbake",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            _postgres_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://osbake@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, _postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """A private Redis server without persistence; yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise AssertionError("redis-server is missing: apt-get install redis-server")
    folder = Path(tempfile.mkdtemp(prefix="osbake-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=(folder / "log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, 20, "redis")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_group(proc)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def backend(kind: str) -> Iterator[list[str]]:
    """`osbake serve` arguments for a backend: 'sqlite' (embedded) or 'postgres+redis' (farm)."""
    if kind == "sqlite":
        yield []
        return
    with postgres() as db, redis() as queue:
        yield ["--db", db, "--queue", queue]
