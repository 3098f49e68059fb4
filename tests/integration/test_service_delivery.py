"""Every build is delivered, and builds run as the build user, not as root.

Delivery: a worker takes a build's id off the queue (SQLite or Redis) and is
killed before its claim reaches the console; the console's reconciler sees the
build queued in the database but on no queue, puts it back, and another worker
runs it. The doomed worker talks to the console through a proxy that holds its
claim, so the kill lands exactly between taking the id and claiming the build.

Build user: a build run by the embedded worker of a root console runs as
osbake-build, cannot read the console's data folder and has no token in its
environment.
"""

from __future__ import annotations

import os
import pwd
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.service_support import (
    BUILD_USER,
    RunningConsole,
    add_configuration,
    backend,
    fake_commands,
    free_port,
    start_build,
    start_worker,
    stop_group,
)

pytestmark = pytest.mark.integration

REQUEUE_AFTER = 3


class ClaimHoldingProxy:
    """An HTTP proxy in front of the console that forwards everything but claims.

    A claim is held (never answered) and announced, so that the test can kill
    the worker that sent it at that moment.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.claimed = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path.endswith("/claim"):
                    proxy.claimed.set()
                    proxy.release.wait(120)
                    return  # the worker is dead by now: no answer
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                reply = httpx.request(
                    self.command, proxy.target + self.path, headers=headers, content=body
                )
                self.send_response(reply.status_code)
                for key, value in reply.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = do_PUT = _forward

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["sqlite", "postgres+redis"])
def farm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningConsole]:
    with backend(request.param) as args:
        console = RunningConsole(
            tmp_path_factory.mktemp(request.param.replace("+", "-")) / "data",
            args=[*args, "--workers", "0", "--requeue-after", str(REQUEUE_AFTER)],
            env=fake_commands(),
        )
        try:
            yield console
        finally:
            console.stop()


def test_a_build_whose_worker_died_before_claiming_it_runs_on_another(
    farm: RunningConsole,
) -> None:
    proxy = ClaimHoldingProxy(farm.url)
    doomed = start_worker(farm, env=fake_commands(), server=proxy.url)
    rescuer = None
    try:
        with farm.api() as api:
            add_configuration(api, "delivered", 'name: delivered\ndescription: "sleep=0.1"\n')
            build_id = start_build(api, "delivered")
            assert proxy.claimed.wait(60), "the first worker never took the build"
            os.killpg(doomed.pid, signal.SIGKILL)  # between taking the id and claiming it
            doomed.wait(20)
            assert api.get(f"/api/builds/{build_id}").json()["state"] == "queued"
            rescuer = start_worker(farm, env=fake_commands())
            build = farm.wait_state(build_id, {"succeeded", "failed"}, REQUEUE_AFTER + 60)
            assert build["state"] == "succeeded", build["reason"]
            assert build["worker"].endswith(f":{rescuer.pid}")
            log = farm.log.read_text()
            assert f"put back: [{build_id}]" in log
    finally:
        proxy.stop()
        stop_group(doomed, signal.SIGKILL)
        if rescuer is not None:
            stop_group(rescuer)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    if os.geteuid() != 0:
        pytest.skip("the build user is made by a console started as root (CI runs as root)")
    console = RunningConsole(tmp_path_factory.mktemp("builduser") / "data", env=fake_commands())
    try:
        yield console
    finally:
        console.stop()


def test_a_console_build_runs_as_the_build_user_and_cannot_read_the_data(
    embedded: RunningConsole,
) -> None:
    data = embedded.data
    with embedded.api() as api:
        for probe in ("secret_key", "osbake.db", "worker_token"):
            name = f"probe-{probe.replace('_', '-').replace('.', '-')}"
            recipe = f'name: {name}\ndescription: "probe={data / probe}"\n'
            add_configuration(api, name, recipe)
            build_id = start_build(api, name)
            build = embedded.wait_state(build_id, {"succeeded", "failed"}, 60)
            assert build["state"] == "succeeded", build["reason"]
            log = api.get(f"/api/builds/{build_id}/log").text
            user = pwd.getpwnam(BUILD_USER)
            assert f"fake: running as uid {user.pw_uid} gid {user.pw_gid}" in log
            assert "fake: probe refused: Permission denied" in log, log
            assert "fake: tokens in the environment: none" in log
            assert (data / probe).stat().st_uid == 0
    assert (data.stat().st_mode & 0o777) == 0o700
    secret = (data / "secret_key").read_text()
    for path in Path("/var/lib/osbake-worker").rglob("*"):
        assert not path.is_file() or secret not in path.read_text(errors="replace")
