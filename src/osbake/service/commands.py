"""`osbake serve` (the build console) and `osbake worker` (a build host of the console)."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from osbake import run
from osbake.errors import UsageError
from osbake.extras import Extra, needs

DEFAULT_BUILD_USER = "osbake-build"
ROOT_WORK_DIR = Path("/var/lib/osbake-worker")
# Drivers of the console's extra that load only when a farm's URL asks for them.
LATER = ("redis", "psycopg")

Handler = Callable[[argparse.Namespace], int]
CommandFactory = Callable[[str, Handler, str], argparse.ArgumentParser]


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/osbake")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "osbake"


def register(command: CommandFactory, sub: object) -> None:
    p = command("serve", cmd_serve, "run the build console (web UI, REST API, scheduler, a worker)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--data", type=Path, help=f"data directory (default {default_data_dir()})")
    p.add_argument(
        "--db", help="database URL, e.g. postgresql://user:pw@host/osbake (default SQLite)"
    )
    p.add_argument("--queue", help="queue URL, e.g. redis://host:6379/0 (default SQLite)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="builds run at once by the embedded worker (0: none, use `osbake worker`)",
    )
    p.add_argument(
        "--admin-password",
        help="password of the first admin on a fresh data directory "
        "(or OSBAKE_ADMIN_PASSWORD; default: a random one, printed once)",
    )
    p.add_argument("--anonymous-read", action="store_true", help="let anyone look (read-only)")
    p.add_argument("--keep", type=int, default=5, help="builds kept per configuration and channel")
    p.add_argument("--disk-budget", help="bytes of artifacts to keep at most, e.g. 200G")
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        help="seconds a running build's worker may stay silent before the build fails",
    )
    p.add_argument(
        "--build-user",
        default=None,
        help="as root: the user the embedded worker's builds run as "
        f"(default {DEFAULT_BUILD_USER}, made if missing); builds never run as root",
    )
    p.add_argument(
        "--requeue-after",
        type=float,
        default=30.0,
        help="seconds a queued build may be missing from the queue before it is put back",
    )
    p.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="import this secret key (gpg --export-secret-keys, no passphrase) as the key "
        "that signs the published streams (default: one made on first start)",
    )
    p.add_argument("--tick", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--stream-seconds", type=float, default=600.0, help=argparse.SUPPRESS)

    p = command("worker", cmd_worker, "take builds from a console's queue and run them")
    p.add_argument("--server", required=True, help="the console's URL, e.g. http://console:8080")
    p.add_argument("--token", help="a token with role 'worker' (or OSBAKE_WORKER_TOKEN)")
    p.add_argument("--concurrency", type=int, default=1, help="builds at once (default 1)")
    p.add_argument(
        "--work-dir",
        type=Path,
        help=f"where builds run (default: {ROOT_WORK_DIR} as root, else the osbake cache)",
    )
    p.add_argument(
        "--build-user",
        default=None,
        help=f"as root: the user builds run as (default {DEFAULT_BUILD_USER}, made if missing; "
        "with --concurrency N also USER-2 ... USER-N); builds never run as root",
    )


# -- serve -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    with needs(Extra.CONSOLE, "osbake serve", *LATER):
        import uvicorn

        from osbake.service import auth, signing_key
        from osbake.service.app import create_app
        from osbake.service.config import ServiceSettings, parse_size
        from osbake.service.models import Role

    out = Console(highlight=False)
    settings = ServiceSettings.create(
        args.data or default_data_dir(),
        # passwords in URLs are safer in the environment than on the command line
        database_url=args.db or os.environ.get("OSBAKE_DATABASE_URL"),
        queue_url=args.queue or os.environ.get("OSBAKE_QUEUE_URL"),
        anonymous_read=args.anonymous_read,
        keep_builds=args.keep,
        disk_budget=parse_size(args.disk_budget) if args.disk_budget else None,
        heartbeat_timeout=args.heartbeat_timeout,
        tick_seconds=args.tick,
        requeue_after=args.requeue_after,
        stream_seconds=args.stream_seconds,
    )
    app = create_app(settings)
    console = app.state.console
    with console.db.session() as session:
        if not auth.has_users(session):
            password = args.admin_password or os.environ.get("OSBAKE_ADMIN_PASSWORD")
            generated = not password
            password = password or secrets.token_urlsafe(12)
            auth.create_user(session, "admin", password, Role.ADMIN)
            session.commit()
            if generated:
                out.print(
                    f"[bold]First start: log in as 'admin' with password [green]{password}[/][/]"
                    " (shown once; change it by making another admin)"
                )
        worker_secret = embedded_worker_token(session, settings.data_dir) if args.workers else None
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base_url = f"http://{url_host}:{args.port}"
    out.print(f"osbake console on {base_url}  (data {settings.data_dir})")
    if args.signing_key is not None:
        signing_key.import_key(settings, args.signing_key)
    out.print(
        f"streams signed by {signing_key.fingerprint(settings)}: "
        f"{base_url}/streams/v1/index.sjson, keyring {base_url}/keyring.gpg"
    )
    supervisor = None
    if worker_secret is not None:
        if os.geteuid() != 0:
            out.print(
                "[yellow]warning:[/] builds run as this user, who can read the console's data "
                "folder; run `osbake serve` as root so that builds run as "
                f"'{DEFAULT_BUILD_USER}' (see docs/service.md, Trust)"
            )
        supervisor = EmbeddedWorker(base_url, worker_secret, args.workers, args.build_user)
        supervisor.start()
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,  # live-log streams would otherwise hold it open
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


EMBEDDED_WORKER = "embedded worker"


def embedded_worker_token(session: Any, data_dir: Path) -> str:
    """The embedded worker's token: the same one at every start, not a new one each time.

    Its secret is kept in DATA/worker_token (private, like the rest of the data
    folder). If it is missing, revoked or expired, a new one is made and every
    other embedded-worker token is revoked: there is only ever one.
    """
    from sqlalchemy import select

    from osbake.service import auth
    from osbake.service.models import Role, Token

    path = data_dir / "worker_token"
    secret = path.read_text().strip() if path.exists() else ""
    token = auth.lookup_token(session, secret) if secret else None
    if token is None or not token.valid() or token.name != EMBEDDED_WORKER:
        token, secret = auth.create_token(
            session, EMBEDDED_WORKER, Role.WORKER, granter=Role.ADMIN, created_by="osbake serve"
        )
        partial = path.with_name(".worker_token.partial")
        partial.write_text(secret)
        partial.chmod(0o600)
        partial.replace(path)
    others = session.scalars(
        select(Token).where(
            Token.name == EMBEDDED_WORKER, Token.id != token.id, Token.revoked.is_(None)
        )
    ).all()
    for other in others:
        auth.revoke_token(other)
    session.commit()
    return secret


class EmbeddedWorker:
    """`osbake worker` as a child of `osbake serve`, restarted if it dies."""

    def __init__(self, server: str, token: str, concurrency: int, build_user: str | None) -> None:
        # The worker dies with the console: never left behind.
        self.argv = [
            *run.orphan_guard(),
            sys.executable,
            "-m",
            "osbake",
            "worker",
            "--server",
            server,
            "--concurrency",
            str(concurrency),
            *(["--build-user", build_user] if build_user else []),
        ]
        self.env = {"OSBAKE_WORKER_TOKEN": token}
        self.stopping = threading.Event()
        self.pid: int | None = None
        self.thread = threading.Thread(target=self._supervise, name="embedded-worker", daemon=True)
        self.err = Console(stderr=True, highlight=False)

    def start(self) -> None:
        self.thread.start()

    def _supervise(self) -> None:
        from osbake.events import Events

        def show(event: dict[str, object]) -> None:
            if event["event"] == "log":
                self.err.print(f"[dim]worker:[/] {event['line']}", soft_wrap=True, markup=True)

        while not self.stopping.is_set():
            completed = run.run(
                self.argv,
                env=self.env,
                events=Events(show),
                check=False,
                started=self._started,
            )
            if self.stopping.is_set():
                break
            self.err.print(f"worker exited with status {completed.returncode}; restarting it")
            time.sleep(2)

    def _started(self, pid: int) -> None:
        self.pid = pid

    def stop(self) -> None:
        self.stopping.set()
        if self.pid is not None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.thread.join(timeout=30)


# -- worker ----------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    with needs(Extra.CONSOLE, "osbake worker", *LATER):
        from osbake.service import queue  # noqa: F401  (Huey: refuse now, not at the first build)
        from osbake.service.worker import WorkerSettings, serve_queue
    from osbake.settings import Settings

    token = args.token or os.environ.pop("OSBAKE_WORKER_TOKEN", None)
    if not token:
        raise UsageError(
            "the worker needs a token",
            hint="make one with role 'worker' on the console's admin page; "
            "pass it with --token or OSBAKE_WORKER_TOKEN",
        )
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    as_root = os.geteuid() == 0
    build_user = args.build_user or (DEFAULT_BUILD_USER if as_root else None)
    if not as_root:
        if args.build_user:
            raise UsageError(
                "--build-user needs a worker started as root", hint="leave it out, or run as root"
            )
        logging.getLogger("osbake.worker").warning(
            "builds run as this worker's own user, who can read its token; "
            "run the worker as root so that builds run as %s",
            DEFAULT_BUILD_USER,
        )
    default_work = (
        ROOT_WORK_DIR if as_root else Settings.from_environment().cache_dir / "console-worker"
    )
    settings = WorkerSettings(
        server=args.server,
        token=token,
        work_dir=args.work_dir or default_work,
        concurrency=args.concurrency,
        build_user=build_user,
    )
    err = Console(stderr=True, highlight=False)
    serve_queue(
        settings,
        on_ready=lambda queue: err.print(f"worker {settings.name}: building for {settings.server}"),
    )
    return 0
