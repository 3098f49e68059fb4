"""What the routes depend on: the console's shared state, the database session,
who asks (and whether their role allows it), and the types of common parameters.

The API routers (osbake.service.api) and the web pages (osbake.service.web)
import from here; nothing here imports them.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from osbake.service import auth, builds, configs, retention, schedules
from osbake.service.config import ServiceSettings
from osbake.service.db import Database
from osbake.service.limits import MIB
from osbake.service.models import Role, now
from osbake.service.queue import BuildQueue
from osbake.service.releases import ReleaseQueue

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
    releases: ReleaseQueue | None = None

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


# -- parameters ----------------------------------------------------------------------------

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
# Text without control characters (no NUL: PostgreSQL cannot store it).
PLAIN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
LINE = r"^[^\x00-\x1f\x7f]*$"
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
ConfigName = Annotated[str, PathParam(max_length=128, pattern=configs.NAME_PATTERN)]
Short = Annotated[str, StringConstraints(max_length=128, pattern=LINE)]
Text = Annotated[str, StringConstraints(max_length=64 << 10, pattern=PLAIN)]
CONFIGURATION_BODY = 96 * MIB  # a configuration of at most configs.MAX_BYTES, base64 or tar
REPORT_BODY = 16 * MIB  # a batch of events, a manifest
ArtifactName = Annotated[str, PathParam(max_length=255, pattern=r"^[^/\x00-\x1f\x7f]+$")]
