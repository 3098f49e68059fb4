"""The console's web application: the routers, middleware and error pages wired together."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import BaseRoute

import osbake
from osbake.errors import OsbakeError
from osbake.service import (
    api,
    auth,
    limits,
    problems,
    release_web,
    releases,
    retention,
    signing_key,
    views,
    web,
)
from osbake.service.config import ServiceSettings
from osbake.service.db import Database, migrate
from osbake.service.deps import Console, csrf_token, login_redirect
from osbake.service.models import Build
from osbake.service.queue import BuildQueue, HueyQueue

HERE = Path(__file__).parent
# The API page's assets (Swagger UI) ship in a Python package: /docs works offline.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def templates() -> Jinja2Templates:
    engine = Jinja2Templates(directory=str(HERE / "templates"))
    engine.env.globals["osbake_version"] = osbake.__version__
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
    release_queue = releases.ReleaseQueue(settings, db)

    def publish_on_bless(build: Build, folder: Path) -> None:
        # Blessing and unblessing both ask for a publish: the streams list what is blessed.
        with db.session() as session:
            state = "blessed" if build.blessed else "unblessed"
            releases.request_publish(session, f"build {build.id} {state}", build.id)

    console = Console(
        settings,
        db,
        queue or HueyQueue(settings.queue_url),
        bless_hooks=[publish_on_bless, *(bless_hooks or [])],
        releases=release_queue,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threads = []
        if background:
            threads = [
                threading.Thread(target=console.loop, name="osbake-console", daemon=True),
                threading.Thread(
                    target=release_queue.loop,
                    args=(console.stop,),
                    name="osbake-releases",
                    daemon=True,
                ),
            ]
            for thread in threads:
                thread.start()
        yield
        console.stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
        signing_key.stop_agent(settings)
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
    problems.install(app, _error_page, login_redirect)

    @app.get("/docs", include_in_schema=False)
    def api_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="osbake console API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    for router in (*api.ROUTERS, web.router, release_web.router):
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
