"""The worker: takes builds from the queue and runs `osbake build` on them.

Each build runs as `python -m osbake build RECIPE -o OUT --json` in its own
working folder, where the configuration version is materialised. Its JSON
events go to the console in batches (which doubles as a heartbeat); the console
answers whether to cancel. After a build of a disk image, `osbake boot` tests
it. The worker speaks to the console over HTTP only, so it runs the same on the
console's host (embedded) and on any build host of a farm.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from osbake import run as runner
from osbake.errors import HostError, OsbakeError, UsageError
from osbake.events import Event, Events
from osbake.service import boot_settings, build_users, configs
from osbake.service.build_users import BuildUser
from osbake.service.builds import BOOTABLE_FORMATS

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
    build_user: str | None = None  # run builds as this user (slot k: USER-k); root only
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

    def upload(self, build_id: int, name: str, handle: BinaryIO, sha256: str) -> None:
        """Send a file with the sha256 the worker claims for it (the console checks it)."""

        def chunks() -> Any:
            while chunk := handle.read(1 << 20):
                yield chunk

        self._check(
            self.http.put(
                f"/builds/{build_id}/files/{name}",
                content=chunks(),
                headers={"X-Checksum-Sha256": sha256},
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


class Slots:
    """Who builds run as: one build user per concurrent build, or this process's user."""

    def __init__(self, users: list[BuildUser]) -> None:
        self.free: queue.Queue[BuildUser] = queue.Queue()
        for user in users:
            self.free.put(user)
        self.dropping = bool(users)

    @contextlib.contextmanager
    def take(self) -> Iterator[BuildUser | None]:
        if not self.dropping:
            yield None
            return
        user = self.free.get()
        try:
            yield user
        finally:
            self.free.put(user)


def as_user(user: BuildUser | None, argv: list[str]) -> list[str]:
    return user.command(argv) if user is not None else [*runner.orphan_guard(), *argv]


def run_build(
    client: ConsoleClient, settings: WorkerSettings, build_id: int, slots: Slots | None = None
) -> None:
    """Run one queued build from start to finish (a Huey task)."""
    spec = client.claim(build_id, settings.name)
    if spec is None:
        return  # cancelled while queued, or another worker has it
    try:
        with (slots or Slots([])).take() as user:
            result = _build(client, settings, build_id, spec, user)
    except Lost:
        return  # the console gave up on the build (cancelled or reaped)
    try:
        client.finish(build_id, result)
    except Lost:
        pass


def _build(
    client: ConsoleClient,
    settings: WorkerSettings,
    build_id: int,
    spec: dict[str, Any],
    user: BuildUser | None,
) -> dict[str, Any]:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"build-{build_id}-", dir=settings.work_dir))
    folder.chmod(0o711)  # root's; its user can reach config/ and out/ only
    source, outdir = folder / "config", folder / "out"
    source.mkdir()
    outdir.mkdir()
    result: dict[str, Any] = {"ok": False}
    try:
        with Reporter(client, build_id) as reporter:
            events = Events(reporter)
            configs.extract(client.configuration(build_id), source)
            if user is not None:
                build_users.give(source, user)
                build_users.give(outdir, user)
            argv = [*settings.build_command, spec["recipe_file"], "-o", str(outdir), "--json"]
            if spec.get("variant"):
                argv += ["--variant", spec["variant"]]
            argv += ["--arch", spec["arch"]]
            completed = runner.run(
                as_user(user, argv),
                events=events,
                cwd=source,
                env=build_users.environment(user),
                clear_env=True,
                check=False,
                started=reporter.started,
            )
            result = _outcome(completed.returncode, completed.tail, reporter)
            if result["ok"]:
                outputs = Outputs(outdir, user)
                manifest_name, manifest_data = outputs.manifest()
                manifest = json.loads(manifest_data)
                for artifact in manifest.get("artifacts", []):
                    name = str(artifact.get("file", ""))
                    events.emit("log", line=f"uploading {name}")
                    with outputs.open(name) as handle:
                        client.upload(build_id, name, handle, str(artifact.get("sha256", "")))
                client.upload(
                    build_id,
                    manifest_name,
                    io.BytesIO(manifest_data),
                    hashlib.sha256(manifest_data).hexdigest(),
                )
                result["manifest"] = manifest
                boot = spec.get("boot") or {}
                result.update(
                    boot_test(
                        settings,
                        manifest,
                        outputs,
                        events,
                        user,
                        datasource=str(boot.get("datasource", boot_settings.DEFAULT_DATASOURCE)),
                        hardware=str(boot.get("hardware", boot_settings.DEFAULT_HARDWARE)),
                    )
                )
    except Lost:
        raise
    except (OsbakeError, OSError, httpx.HTTPError, ValueError) as exc:
        result = {"ok": False, "error": f"the worker failed: {exc}", "step": "worker"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


class Outputs:
    """A build's output folder, read by the worker without trusting what the build left.

    The build ran as another user and may have left links to files it could not
    read itself: every file is opened without following links, must be a plain
    file owned by the build's user, and is named without a folder.
    """

    MAX_MANIFEST = 64 << 20

    def __init__(self, folder: Path, user: BuildUser | None) -> None:
        self.folder = folder
        self.uid = user.uid if user is not None else os.geteuid()

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise UsageError(f"the build names an output '{name[:80]}' outside its folder")
        folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        except OSError as exc:
            raise UsageError(
                f"the build's output '{name}' cannot be read: {exc.strerror}"
            ) from None
        finally:
            os.close(folder)
        info = os.fstat(fd)
        # Owned by the build's user: a link (hard or soft) to a file of anyone else is refused.
        # (Its own files may have more names: outputs are hard links into its step cache.)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != self.uid:
            os.close(fd)
            raise UsageError(
                f"the build's output '{name}' is not a plain file of the build's own",
                hint="a build's outputs are files it wrote, not links",
            )
        with os.fdopen(fd, "rb") as handle:
            yield handle

    def manifest(self) -> tuple[str, bytes]:
        found = sorted(p.name for p in self.folder.iterdir() if p.name.endswith(".manifest.json"))
        if len(found) != 1:
            raise UsageError(f"expected one manifest in {self.folder}, found {len(found)}")
        with self.open(found[0]) as handle:
            data = handle.read(self.MAX_MANIFEST + 1)
        if len(data) > self.MAX_MANIFEST:
            raise UsageError("the build's manifest is too large")
        return found[0], data


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


def boot_test(
    settings: WorkerSettings,
    manifest: dict[str, Any],
    outputs: Outputs,
    events: Events,
    user: BuildUser | None = None,
    *,
    datasource: str = boot_settings.DEFAULT_DATASOURCE,
    hardware: str = boot_settings.DEFAULT_HARDWARE,
) -> dict[str, Any]:
    """Boot each disk image and live ISO under QEMU (`osbake boot`, as the build's user);
    tarballs have nothing to boot.

    With a datasource (the configuration's boot-test setting) the guest gets its
    instance from it, and the boot passes when cloud-init finishes with that datasource
    (a stronger proof than the login prompt, which shows before cloud-init is done)."""
    outdir = outputs.folder
    disks = [a for a in manifest.get("artifacts", []) if a.get("format") in BOOTABLE_FORMATS]
    if not disks:
        return {"boot_state": "none", "boot_detail": "no boot test: no disk image"}
    firmwares = list(manifest.get("recipe", {}).get("boot") or ["bios"])
    options = boot_settings.boot_options(datasource, hardware)
    done = boot_settings.cloud_init_done(datasource)
    expect = [done] if done is not None else [settings.boot_expect]
    how = f" ({boot_settings.describe(datasource, hardware)})" if options else ""
    details = []
    passed = True
    for disk in disks:
        for firmware in firmwares:
            name = f"boot test ({disk['file']}, {firmware})"
            events.step(name)
            started = time.monotonic()
            with outputs.open(str(disk["file"])):
                pass  # a plain file of the build's own, in its folder
            argv = [
                *settings.boot_command,
                str(outdir / disk["file"]),
                "--firmware",
                str(firmware),
                *options,
                *(word for pattern in expect for word in ("--expect", pattern)),
            ]
            completed = runner.run(
                as_user(user, argv),
                events=events,
                cwd=outdir,
                env=build_users.environment(user),
                clear_env=True,
                check=False,
            )
            ok = completed.returncode == 0
            events.result(name, time.monotonic() - started, status="done" if ok else "failed")
            if ok:
                details.append(f"{disk['file']} booted with {firmware}{how}")
            else:
                passed = False
                tail = "\n".join(completed.tail[-BOOT_TAIL:])
                details.append(
                    f"{disk['file']} did not boot with {firmware}{how} "
                    f"(exit {completed.returncode}):\n{tail}"
                )
    return {"boot_state": "passed" if passed else "failed", "boot_detail": "\n".join(details)}


def prepare(settings: WorkerSettings) -> Slots:
    """The build users and the work folder; refuses to start when builds could not run."""
    if settings.build_user is None:
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        return Slots([])
    users = build_users.ensure(settings.build_user, settings.concurrency)
    build_users.private_work_dir(settings.work_dir)
    for user in users:
        for what, argv in (
            (f"reach the work folder {settings.work_dir}", ["test", "-x", str(settings.work_dir)]),
            (
                f"run the build command ({settings.build_command[0]})",
                [*settings.build_command, "--help"],
            ),
        ):
            probe = runner.run(
                user.command(argv),
                env=build_users.environment(user),
                clear_env=True,
                cwd="/",
                check=False,
                capture=True,
            )
            if probe.returncode != 0:
                raise HostError(
                    f"the build user '{user.name}' cannot {what}: " + " ".join(probe.tail[-3:]),
                    hint="install osbake where every user can run it (e.g. a venv under /opt "
                    "made with /usr/bin/python3) and give --work-dir a folder whose parents "
                    "every user can enter",
                )
    return Slots(users)


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
    slots = prepare(settings)
    builds = HueyQueue(
        hello["queue"], run=lambda build_id: run_build(client, settings, build_id, slots)
    )
    if on_ready is not None:
        on_ready(hello["queue"])
    builds.consumer(settings.concurrency).run()
