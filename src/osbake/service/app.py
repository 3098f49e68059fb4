"""The console's web application: wiring, authentication, errors and the background loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

import osbake
from osbake.errors import OsbakeError, RecipeError, UsageError
from osbake.service import auth, builds, retention, schedules
from osbake.service.builds import Conflict, NotFound
from osbake.service.config import ServiceSettings
from osbake.service.db import Database, migrate
from osbake.service.models import Role, User
from osbake.service.queue import BuildQueue, HueyQueue

HERE = Path(__file__).parent
log = logging.getLogger("osbake.service")


@dataclass
class Console:
    """Everything the routes share: settings, database, queue, files in use."""

    settings: ServiceSettings
    db: Database
    queue: BuildQueue
    in_use: retention.InUse = field(default_factory=retention.InUse)
    bless_hooks: list[retention.BlessHook] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def tick(self) -> None:
        """One round of the background work: schedules, lost workers, retention."""
        with self.db.session() as session:
            fired = schedules.fire_due(session, self.queue)
            if fired:
                log.info("schedules queued builds %s", [b.id for b in fired])
        with self.db.session() as session:
            reaped = builds.reap(session, self.settings)
            if reaped:
                log.warning("builds whose worker went silent: %s", reaped)
        with self.db.session() as session:
            retention.collect(session, self.settings, self.in_use)

    def loop(self) -> None:
        while not self.stop.wait(self.settings.tick_seconds):
            try:
                self.tick()
            except Exception:  # the loop must survive a bad round (e.g. the database restarting)
                log.exception("background round failed")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user (web), a token (API) or nobody (anonymous read)."""

    name: str
    role: str
    via: str  # "session", "token" or "anonymous"
    user_id: int | None = None

    def allows(self, role: Role) -> bool:
        if self.via == "anonymous":
            return role == Role.VIEWER
        return auth.allows(self.role, role)


def get_console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def get_session(request: Request) -> Iterator[Session]:
    with get_console(request).db.session() as session:
        yield session


ConsoleDep = Annotated[Console, Depends(get_console)]
SessionDep = Annotated[Session, Depends(get_session)]


def current_principal(request: Request, session: SessionDep) -> Principal | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = auth.lookup_token(session, header[7:].strip())
        session.commit()
        if token is None:
            raise HTTPException(401, "the token is not valid (revoked or mistyped)")
        return Principal(f"token:{token.name}", token.role, "token", token.user_id)
    user_id = request.session.get("user_id")
    if user_id is not None:
        user = session.get(User, user_id)
        if user is not None:
            return Principal(user.name, user.role, "session", user.id)
    if get_console(request).settings.anonymous_read:
        return Principal("anonymous", Role.VIEWER, "anonymous")
    return None


PrincipalDep = Annotated[Principal | None, Depends(current_principal)]


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def require(role: Role) -> Callable[..., Any]:
    """A dependency: the caller must have `role`; cookie sessions must show the CSRF token."""

    async def dependency(request: Request, who: PrincipalDep) -> Principal:
        if who is None:
            raise HTTPException(
                401,
                "log in, or send an API token (Authorization: Bearer ...)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not who.allows(role):
            raise HTTPException(403, f"this needs the role '{role}' (you are {who.role})")
        if who.via == "session" and request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get("x-csrf-token")
            if sent is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")
            ):
                form = await request.form()
                sent = str(form.get("csrf_token") or "")
            if not sent or not secrets.compare_digest(sent, csrf_token(request)):
                raise HTTPException(
                    403, "the form is stale or forged (CSRF check); reload the page"
                )
        return who

    return dependency


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Builder = Annotated[Principal, Depends(require(Role.BUILDER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
WorkerDep = Annotated[Principal, Depends(require(Role.WORKER))]


def status_for(exc: OsbakeError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, RecipeError | UsageError) or exc.exit_code == 2:
        return 422  # bad input: recipe, elements, request
    return 400


def error_body(exc: OsbakeError) -> dict[str, Any]:
    return {
        "error": exc.message,
        "hint": exc.hint,
        "location": str(exc.location) if exc.location else None,
        "detail": exc.render(),
    }


def templates() -> Jinja2Templates:
    engine = Jinja2Templates(directory=str(HERE / "templates"))
    engine.env.globals["osbake_version"] = osbake.__version__
    from osbake.service import views

    engine.env.filters.update(views.FILTERS)
    return engine


def _error_page(request: Request, error: OsbakeError, status_code: int) -> Response:
    response: Response = request.app.state.templates.TemplateResponse(
        request,
        "error.html",
        {"error": error, "who": None, "csrf": csrf_token(request)},
        status_code=status_code,
    )
    return response


def create_app(
    settings: ServiceSettings,
    *,
    queue: BuildQueue | None = None,
    background: bool = True,
    bless_hooks: list[retention.BlessHook] | None = None,
) -> FastAPI:
    """The console as an ASGI application (uvicorn serves it in `osbake serve`)."""
    db = Database(settings.database_url)
    migrate(db.engine)
    for folder in (settings.artifacts_dir, settings.logs_dir, settings.scratch_dir):
        folder.mkdir(parents=True, exist_ok=True)
    console = Console(
        settings, db, queue or HueyQueue(settings.queue_url), bless_hooks=bless_hooks or []
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = None
        if background:
            thread = threading.Thread(target=console.loop, name="osbake-console", daemon=True)
            thread.start()
        yield
        console.stop.set()
        if thread is not None:
            await asyncio.to_thread(thread.join, 10)
        db.dispose()

    app = FastAPI(
        title="osbake build console",
        version=osbake.__version__,
        description="Configurations, builds, logs, artifacts, schedules and blessing. "
        "Authenticate with `Authorization: Bearer TOKEN`.",
        lifespan=lifespan,
    )
    app.state.console = console
    app.state.templates = templates()
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="osbake_session",
        same_site="lax",
        https_only=False,
        max_age=7 * 24 * 3600,
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(OsbakeError)
    async def osbake_error(request: Request, exc: OsbakeError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse(error_body(exc), status_code=status_for(exc))
        return _error_page(request, exc, status_for(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.url.path.startswith("/static/"):
            return JSONResponse(
                {"error": exc.detail, "hint": None, "location": None, "detail": exc.detail},
                status_code=exc.status_code,
                headers=getattr(exc, "headers", None),
            )
        if exc.status_code == 401:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return _error_page(request, UsageError(str(exc.detail)), exc.status_code)

    from osbake.service import api, web

    app.include_router(api.router)
    app.include_router(web.router)
    return app
