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
from urllib.parse import urlencode, urlsplit

import fastapi_offline
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import BaseRoute

import osbake
from osbake.errors import OsbakeError
from osbake.service import auth, builds, limits, problems, retention, schedules
from osbake.service.config import ServiceSettings
from osbake.service.db import Database, migrate
from osbake.service.models import Role, now
from osbake.service.queue import BuildQueue, HueyQueue

HERE = Path(__file__).parent
# The API page's assets (Swagger UI) ship in a Python package: /docs works offline.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
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
        """One round of the background work: schedules, lost builds and workers, retention."""
        with self.db.session() as session:
            fired = schedules.fire_due(session, self.queue)
            if fired:
                log.info("schedules queued builds %s", [b.id for b in fired])
        with self.db.session() as session:
            requeued = builds.requeue_lost(session, self.queue, self.settings.requeue_after)
            if requeued:
                log.warning("queued builds missing from the queue, put back: %s", requeued)
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
    token_id: int | None = None

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


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request, session: SessionDep) -> Principal | None:
    """The credential of the request: a bearer token, else a live log-in, else anonymous."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthorized("send the token as 'Authorization: Bearer TOKEN'")
        token = auth.lookup_token(session, secret.strip())
        if token is None:
            raise _unauthorized("the token is not valid (mistyped, or not one of this console)")
        if token.revoked is not None:
            raise _unauthorized(f"the token '{token.name}' was revoked")
        if not token.valid():
            raise _unauthorized(f"the token '{token.name}' has expired")
        token.last_used = now()
        session.commit()
        return Principal(f"token:{token.name}", token.role, "token", token.user_id, token.id)
    cookie = request.session.get("sid")
    if cookie:
        user = auth.session_user(session, str(cookie))
        if user is not None:
            return Principal(user.name, user.role, "session", user.id)
        request.session.clear()  # logged out or expired: the cookie is dead
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


def require(role: Role, *, identified: bool = False) -> Callable[..., Any]:
    """A dependency: the caller must have `role`; cookie sessions must show the CSRF token.

    `identified`: anonymous readers are refused too (e.g. making tokens).
    """

    async def dependency(request: Request, who: PrincipalDep) -> Principal:
        if who is None or (identified and who.via == "anonymous"):
            raise _unauthorized("log in, or send an API token (Authorization: Bearer ...)")
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

    dependency.osbake_role = role  # type: ignore[attr-defined]  # read by problems.document
    return dependency


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Account = Annotated[Principal, Depends(require(Role.VIEWER, identified=True))]
Builder = Annotated[Principal, Depends(require(Role.BUILDER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
WorkerDep = Annotated[Principal, Depends(require(Role.WORKER))]


def safe_next(target: str | None) -> str:
    """Where to go after log-in: a path of this console, never another site."""
    text = (target or "").strip()
    if (
        not text.startswith("/")
        or text.startswith(("//", "/\\"))
        or any(ord(c) < 0x20 or c == "\\" for c in text)
        or len(text) > 2000
    ):
        return "/"
    parts = urlsplit(text)
    if parts.scheme or parts.netloc:
        return "/"
    return text


def login_redirect(request: Request) -> Response:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': safe_next(path)})}", status_code=303)


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
        "Authenticate with `Authorization: Bearer TOKEN`. Every error answer has the "
        "same body: `error` (what), `hint` (how to fix it), `location` (where) and `detail`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.console = console
    app.state.templates = templates()
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="osbake_session",
        same_site="lax",
        https_only=False,
        max_age=auth.SESSION_SECONDS,
    )
    app.add_middleware(
        limits.BodyLimit,
        limit_for=lambda scope: limits.route_limit(app.state.routes, scope, limits.DEFAULT_BODY),
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.mount("/docs-assets", StaticFiles(directory=str(DOCS_ASSETS)), name="docs-assets")
    problems.install(app, _error_page)

    @app.get("/docs", include_in_schema=False)
    def api_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="osbake console API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    from osbake.service import api, web

    for router in (api.router, web.router):
        problems.document(router.routes)
        app.include_router(router)
    app.state.routes = all_routes(app)
    return app


def all_routes(app: FastAPI) -> list[BaseRoute]:
    """Every route of the application, with those of included routers in their place.

    (Newer FastAPI keeps included routers as one entry of `app.routes`.)
    """
    found: list[BaseRoute] = []

    def walk(routes: list[BaseRoute]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(list(inner.routes))
            else:
                found.append(route)

    walk(list(app.router.routes))
    return found
