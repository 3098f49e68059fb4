"""The worker: takes builds from the queue and runs `osbake build` on them.

Each build runs as `python -m osbake build RECIPE -o OUT --json` in its own
working folder, where the configuration version is materialised. Its JSON
events go to the console in batches (which doubles as a heartbeat); the console
answers whether to cancel. After a build of a disk image, `osbake boot` tests
it. The worker speaks to the console over HTTP only, so it runs the same on the
console's host (embedded) and on any build host of a farm.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from osbake import run as runner
from osbake.errors import OsbakeError, UsageError
from osbake.events import Event, Events
from osbake.service import configs
from osbake.service.builds import DISK_FORMATS

FLUSH_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0
KILL_GRACE = 20.0
BOOT_TAIL = 15
HELLO_PATIENCE = 60.0


def python_command(*words: str) -> list[str]:
    return [sys.executable, "-m", "osbake", *words]


def _command_from_env(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    return shlex.split(value) if value else default


@dataclass
class WorkerSettings:
    server: str
    token: str
    work_dir: Path
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    concurrency: int = 1
    build_command: list[str] = field(
        default_factory=lambda: _command_from_env("OSBAKE_BUILD_COMMAND", python_command("build"))
    )
    boot_command: list[str] = field(
        default_factory=lambda: _command_from_env("OSBAKE_BOOT_COMMAND", python_command("boot"))
    )
    boot_expect: str = "login:"


class Lost(OsbakeError):
    """The console no longer expects this build from this worker."""


class ConsoleClient:
    """The worker's side of /api/worker."""

    def __init__(self, server: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=server.rstrip("/") + "/api/worker",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60.0, connect=10.0),
        )

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 409:
            raise Lost(response.json().get("error", "conflict"))
        if response.status_code in (401, 403):
            raise UsageError(
                f"the console refused the worker's token ({response.status_code})",
                hint="make a token with role 'worker' (admin page or POST /api/tokens)",
            )
        response.raise_for_status()
        return response

    def hello(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self._check(self.http.get("/hello")).json()
        except httpx.HTTPError as exc:
            raise UsageError(
                f"cannot reach the console: {exc}", hint="check --server (e.g. http://host:8080)"
            ) from None
        return result

    def claim(self, build_id: int, worker: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._check(
                self.http.post(f"/builds/{build_id}/claim", json={"worker": worker})
            ).json()
        except Lost:
            return None
        return result

    def configuration(self, build_id: int) -> bytes:
        return self._check(self.http.get(f"/builds/{build_id}/config.tar.gz")).content

    def events(self, build_id: int, events: list[Event]) -> bool:
        response = self._check(self.http.post(f"/builds/{build_id}/events", json=events))
        return bool(response.json().get("cancel"))

    def upload(self, build_id: int, path: Path) -> None:
        def chunks() -> Any:
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

        self._check(
            self.http.put(
                f"/builds/{build_id}/files/{path.name}",
                content=chunks(),
                timeout=httpx.Timeout(600.0, connect=10.0),
            )
        )

    def finish(self, build_id: int, result: dict[str, Any]) -> None:
        self._check(self.http.post(f"/builds/{build_id}/finish", json=result))


class Reporter:
    """Collects a build's events and sends them in batches; stops the build on cancel."""

    def __init__(self, client: ConsoleClient, build_id: int) -> None:
        self.client = client
        self.build_id = build_id
        self.pending: list[Event] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pid: int | None = None
        self.cancelled = False
        self.lost = False
        self.last_finish: Event | None = None
        self.thread = threading.Thread(target=self._loop, name=f"report-{build_id}", daemon=True)

    def __enter__(self) -> Reporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.flush()

    def __call__(self, event: Event) -> None:
        """An Events sink: the build's JSON lines arrive as log lines of the command."""
        if event["event"] == "log":
            try:
                inner = json.loads(event["line"])
            except ValueError:
                inner = None
            if isinstance(inner, dict) and "event" in inner:
                event = inner
        if event["event"] == "finish":
            self.last_finish = event
        with self.lock:
            self.pending.append(event)

    def started(self, pid: int) -> None:
        self.pid = pid

    def flush(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        if self.lost:
            return
        try:
            if self.client.events(self.build_id, batch) and not self.cancelled:
                self.cancelled = True
                threading.Thread(target=self._terminate, daemon=True).start()
        except Lost:
            # The console gave up on this build (it was reaped): stop it.
            self.lost = True
            threading.Thread(target=self._terminate, daemon=True).start()
        except httpx.HTTPError:
            with self.lock:  # keep them for the next try
                self.pending[:0] = batch

    def _loop(self) -> None:
        last = 0.0
        while not self.stop.wait(FLUSH_SECONDS):
            with self.lock:
                has_news = bool(self.pending)
            if has_news or time.monotonic() - last > HEARTBEAT_SECONDS:
                self.flush()
                last = time.monotonic()

    def _terminate(self) -> None:
        """SIGTERM to the build's process group (it cleans up), SIGKILL if it lingers."""
        pid = self.pid
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + KILL_GRACE
            while time.monotonic() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)


def orphan_guard() -> list[str]:
    """A prefix that kills the command when its parent dies (setpriv, util-linux)."""
    if runner.exists("setpriv"):
        return [runner.require_tool("setpriv"), "--pdeathsig", "KILL", "--"]
    return []


def run_build(client: ConsoleClient, settings: WorkerSettings, build_id: int) -> None:
    """Run one queued build from start to finish (a Huey task)."""
    spec = client.claim(build_id, settings.name)
    if spec is None:
        return  # cancelled while queued, or another worker has it
    folder = settings.work_dir / f"build-{build_id}"
    shutil.rmtree(folder, ignore_errors=True)
    source, outdir = folder / "config", folder / "out"
    source.mkdir(parents=True)
    result: dict[str, Any] = {"ok": False}
    try:
        with Reporter(client, build_id) as reporter:
            events = Events(reporter)
            configs.extract(client.configuration(build_id), source)
            argv = [
                *orphan_guard(),
                *settings.build_command,
                spec["recipe_file"],
                "-o",
                str(outdir),
                "--json",
            ]
            if spec.get("variant"):
                argv += ["--variant", spec["variant"]]
            argv += ["--arch", spec["arch"]]
            completed = runner.run(
                argv, events=events, cwd=source, check=False, started=reporter.started
            )
            result = _outcome(completed.returncode, completed.tail, reporter)
            if result["ok"]:
                manifest_file = _manifest(outdir)
                manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
                for artifact in manifest.get("artifacts", []):
                    events.emit("log", line=f"uploading {artifact['file']}")
                    client.upload(build_id, outdir / artifact["file"])
                client.upload(build_id, manifest_file)
                result["manifest"] = manifest
                result.update(boot_test(settings, manifest, outdir, events))
    except Lost:
        return
    except (OsbakeError, OSError, httpx.HTTPError, ValueError) as exc:
        result = {"ok": False, "error": f"the worker failed: {exc}", "step": "worker"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        client.finish(build_id, result)
    except Lost:
        pass


def _outcome(returncode: int, tail: list[str], reporter: Reporter) -> dict[str, Any]:
    finish = reporter.last_finish
    if returncode == 0 and finish is not None and finish.get("ok"):
        return {"ok": True}
    if finish is not None and not finish.get("ok"):
        return {"ok": False, "error": finish.get("error"), "step": finish.get("step")}
    last_lines = "\n".join(f"    {line}" for line in tail[-10:])
    return {
        "ok": False,
        "error": f"osbake build exited with status {returncode}:\n{last_lines}",
        "step": None,
    }


def _manifest(outdir: Path) -> Path:
    found = sorted(outdir.glob("*.manifest.json"))
    if len(found) != 1:
        raise UsageError(f"expected one manifest in {outdir}, found {len(found)}")
    return found[0]


def boot_test(
    settings: WorkerSettings, manifest: dict[str, Any], outdir: Path, events: Events
) -> dict[str, Any]:
    """Boot each disk image under QEMU (`osbake boot`); tarballs have nothing to boot."""
    disks = [a for a in manifest.get("artifacts", []) if a.get("format") in DISK_FORMATS]
    if not disks:
        return {"boot_state": "none", "boot_detail": "no boot test: no disk image"}
    firmwares = list(manifest.get("recipe", {}).get("boot") or ["bios"])
    details = []
    passed = True
    for disk in disks:
        for firmware in firmwares:
            name = f"boot test ({disk['file']}, {firmware})"
            events.step(name)
            started = time.monotonic()
            argv = [
                *settings.boot_command,
                str(outdir / disk["file"]),
                "--firmware",
                firmware,
                "--expect",
                settings.boot_expect,
            ]
            completed = runner.run(argv, events=events, check=False)
            ok = completed.returncode == 0
            events.result(name, time.monotonic() - started, status="done" if ok else "failed")
            if ok:
                details.append(f"{disk['file']} booted with {firmware}")
            else:
                passed = False
                tail = "\n".join(completed.tail[-BOOT_TAIL:])
                details.append(
                    f"{disk['file']} did not boot with {firmware} "
                    f"(exit {completed.returncode}):\n{tail}"
                )
    return {"boot_state": "passed" if passed else "failed", "boot_detail": "\n".join(details)}


def serve_queue(settings: WorkerSettings, on_ready: Callable[[str], None] | None = None) -> None:
    """Consume builds from the console's queue until SIGINT/SIGTERM."""
    from osbake.service.queue import HueyQueue

    client = ConsoleClient(settings.server, settings.token)
    deadline = time.monotonic() + HELLO_PATIENCE
    while True:  # the console may still be starting (embedded worker)
        try:
            hello = client.hello()
            break
        except UsageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    queue = HueyQueue(hello["queue"], run=lambda build_id: run_build(client, settings, build_id))
    if on_ready is not None:
        on_ready(hello["queue"])
    queue.consumer(settings.concurrency).run()
