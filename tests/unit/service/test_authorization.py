"""Every route of the console x every kind of credential -> the status it must get.

The routes are read from the application itself and must all be in ROLES, so a
new route cannot be added without saying who may call it. A credential without
the role gets 403; no credential, an expired or a revoked token gets 401 on the
API and a redirect to the log-in page on pages; a credential with the role is
never refused (whatever its request's other faults, no 401, 403 or 5xx).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from osbake.service import auth
from osbake.service.app import all_routes, create_app
from osbake.service.config import ServiceSettings
from osbake.service.models import Role, Schedule, Token, now
from osbake.service.queue import ListQueue
from tests.unit.service.service_harness import Harness

PUBLIC = "public"
LOGIN_FORM = "public, with the form's CSRF token"  # without it: 403
ME = "viewer, identified"  # any credential of a person or token, not anonymous, not a worker

# (method, path) -> the role it needs
ROLES: dict[tuple[str, str], str] = {
    ("GET", "/api/status"): "viewer",
    ("POST", "/api/tokens"): ME,
    ("GET", "/api/tokens"): ME,
    ("DELETE", "/api/tokens/{token_id}"): ME,
    ("POST", "/api/users"): "admin",
    ("GET", "/api/users"): "admin",
    ("GET", "/api/configurations"): "viewer",
    ("POST", "/api/configurations"): "builder",
    ("POST", "/api/configurations/import"): "builder",
    ("GET", "/api/configurations/{name}"): "viewer",
    ("GET", "/api/configurations/{name}/versions/{number}"): "viewer",
    ("GET", "/api/configurations/{name}/versions/{number}/files/{path}"): "viewer",
    ("GET", "/api/configurations/{name}/versions/{number}/archive"): "viewer",
    ("GET", "/api/configurations/{name}/diff"): "viewer",
    ("POST", "/api/configurations/{name}/schedules"): "builder",
    ("PUT", "/api/configurations/{name}/boot-test"): "builder",
    ("GET", "/api/schedules"): "viewer",
    ("DELETE", "/api/schedules/{schedule_id}"): "builder",
    ("POST", "/api/builds"): "builder",
    ("GET", "/api/builds"): "viewer",
    ("GET", "/api/builds/{build_id}"): "viewer",
    ("POST", "/api/builds/{build_id}/cancel"): "builder",
    ("POST", "/api/builds/{build_id}/retry"): "builder",
    ("POST", "/api/builds/{build_id}/bless"): "admin",
    ("GET", "/api/builds/{build_id}/log"): "viewer",
    ("GET", "/api/builds/{build_id}/events"): "viewer",
    ("GET", "/api/builds/{build_id}/manifest"): "viewer",
    ("GET", "/api/builds/{build_id}/diff/{other_id}"): "viewer",
    ("GET", "/api/builds/{build_id}/artifacts/{file}"): "viewer",
    ("HEAD", "/api/builds/{build_id}/artifacts/{file}"): "viewer",
    ("GET", "/api/search/packages"): "viewer",
    ("POST", "/api/lookup"): "viewer",
    ("GET", "/api/disk"): "viewer",
    ("POST", "/api/gc"): "admin",
    ("POST", "/api/builds/{build_id}/unbless"): "admin",
    ("GET", "/api/signing-key"): "viewer",
    ("POST", "/api/publish"): "admin",
    ("GET", "/api/configurations/{name}/releases"): "viewer",
    ("PUT", "/api/configurations/{name}/push-targets"): "admin",
    ("GET", "/api/release-jobs/{job_id}"): "viewer",
    ("GET", "/api/release-jobs/{job_id}/log"): "viewer",
    ("GET", "/api/worker/hello"): "worker",
    ("POST", "/api/worker/builds/{build_id}/claim"): "worker",
    ("GET", "/api/worker/builds/{build_id}/config.tar.gz"): "worker",
    ("POST", "/api/worker/builds/{build_id}/events"): "worker",
    ("PUT", "/api/worker/builds/{build_id}/files/{file}"): "worker",
    ("POST", "/api/worker/builds/{build_id}/finish"): "worker",
    # pages
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): LOGIN_FORM,
    ("POST", "/logout"): "viewer",
    ("GET", "/"): "viewer",
    ("GET", "/configurations/new"): "builder",
    ("POST", "/configurations"): "builder",
    ("GET", "/configurations/{name}"): "viewer",
    ("GET", "/configurations/{name}/edit"): "builder",
    ("POST", "/configurations/{name}/edit"): "builder",
    ("GET", "/configurations/{name}/versions/{number}"): "viewer",
    ("GET", "/configurations/{name}/diff"): "viewer",
    ("POST", "/configurations/{name}/builds"): "builder",
    ("POST", "/configurations/{name}/schedules"): "builder",
    ("POST", "/configurations/{name}/boot-test"): "builder",
    ("POST", "/schedules/{schedule_id}/delete"): "builder",
    ("GET", "/builds/{build_id}"): "viewer",
    ("POST", "/builds/{build_id}/cancel"): "builder",
    ("POST", "/builds/{build_id}/retry"): "builder",
    ("POST", "/builds/{build_id}/bless"): "admin",
    ("GET", "/builds/{build_id}/manifest"): "viewer",
    ("GET", "/builds/{build_id}/diff/{other_id}"): "viewer",
    ("GET", "/search"): "viewer",
    ("GET", "/lookup"): "viewer",
    ("POST", "/lookup"): "viewer",
    ("GET", "/admin"): "admin",
    ("POST", "/admin/users"): "admin",
    ("POST", "/admin/tokens"): "admin",
    ("POST", "/admin/tokens/{token_id}/delete"): "admin",
    ("POST", "/admin/gc"): "admin",
    ("POST", "/builds/{build_id}/unbless"): "admin",
    ("GET", "/configurations/{name}/releases"): "viewer",
    # what the console publishes: anyone may read it
    ("GET", "/streams/v1/{name}"): PUBLIC,
    ("HEAD", "/streams/v1/{name}"): PUBLIC,
    ("GET", "/images/{path}"): PUBLIC,
    ("HEAD", "/images/{path}"): PUBLIC,
    ("GET", "/keyring.gpg"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/static/{path}"): PUBLIC,
    ("GET", "/docs-assets/{path}"): PUBLIC,
}

CREDENTIALS = ("none", "viewer", "builder", "admin", "worker", "expired", "revoked")


def app_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) the application answers, read from the application."""
    found: set[tuple[str, str]] = set()
    for route in all_routes(app):
        if isinstance(route, Mount):
            found.add(("GET", f"{route.path}/{{path}}"))
        elif isinstance(route, APIRoute | Route):
            path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
            for method in route.methods or ():
                if (
                    method == "HEAD"
                    and isinstance(route, Route)
                    and not isinstance(route, APIRoute)
                ):
                    continue  # Starlette adds HEAD to its own GET routes
                found.add((method, path))
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, dict[str, str]]]:
    settings = ServiceSettings.create(
        tmp_path_factory.mktemp("authz") / "data", queue_url="memory://", stream_seconds=0.5
    )
    app = create_app(settings, queue=ListQueue(), background=False)
    with TestClient(app) as client:
        harness = Harness(app, client)
        harness.configuration()
        build = harness.build()
        harness.run_fake(build["id"])
        values = {
            "build_id": str(build["id"]),
            "other_id": str(build["id"]),
            "name": "demo",
            "number": "1",
        }
        with harness.console.db.session() as session:
            expired, secret = auth.create_token(
                session, "old", Role.ADMIN, granter=Role.ADMIN, expires=now() + 60
            )
            expired.expires = now() - 1
            revoked, revoked_secret = auth.create_token(
                session, "gone", Role.ADMIN, granter="admin"
            )
            auth.revoke_token(revoked)
            victim, _ = auth.create_token(session, "victim", Role.VIEWER, granter=Role.ADMIN)
            from osbake.service import builds

            schedule = Schedule(
                configuration_id=builds.get_configuration(session, "demo").id,
                cron="0 2 * * *",
                next_run=now() + 3600,
            )
            session.add(schedule)
            session.commit()
            values |= {"token_id": str(victim.id), "schedule_id": str(schedule.id)}
            assert session.get(Token, victim.id) is not None
        harness.tokens["expired"] = secret
        harness.tokens["revoked"] = revoked_secret
        values |= {"file": "demo.tar", "path": "recipe.yaml"}
        yield harness, values


def concrete(path: str, values: dict[str, str]) -> str:
    url = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "console.css"), path)
    if url.startswith("/docs-assets/"):
        url = "/docs-assets/swagger-ui.css"
    if url.endswith("/diff"):
        url += "?a=1&b=1"
    if url.startswith(("/api/search/packages", "/search")):
        url += "?name=curl&package=curl"
    return url


def expected(role: str, credential: str, api: bool) -> set[int] | None:
    """The statuses a credential must get (None: allowed, anything but 401/403/5xx)."""
    if role == PUBLIC:
        return None
    if role == LOGIN_FORM:
        return {403}
    refused_login = {401} if api else {303}
    if credential in ("none", "expired", "revoked"):
        return refused_login
    if role == ME:
        return {403} if credential == "worker" else None
    return None if auth.allows(credential, Role(role)) else {403}


def test_every_route_is_in_the_table(world: tuple[Harness, dict[str, str]]) -> None:
    harness, _ = world
    routes = app_routes(harness.app)
    assert routes - set(ROLES) == set(), "a route nobody said who may call"
    assert set(ROLES) - routes == set(), "the table names a route the console no longer has"


@pytest.mark.real_subprocess  # the signing key's routes (keyring, fingerprint) run gpg
@pytest.mark.parametrize("credential", CREDENTIALS)
def test_each_route_answers_each_credential_as_its_role_says(
    world: tuple[Harness, dict[str, str]], credential: str
) -> None:
    harness, values = world
    wrong = []
    for (method, path), role in sorted(ROLES.items()):
        url = concrete(path, values)
        headers = {} if credential == "none" else harness.headers(credential)
        if method in ("POST", "PUT"):
            headers["content-type"] = "application/json"
        response = harness.client.request(
            method,
            url,
            headers=headers,
            content=b"{}" if method in ("POST", "PUT") else None,
            follow_redirects=False,
        )
        api = path.startswith("/api/")
        want = expected(role, credential, api)
        status = response.status_code
        if want is None:
            ok = status not in (401, 403) and status < 500
        else:
            ok = status in want
            if ok and status == 303:
                ok = response.headers["location"].startswith("/login")
        if ok and status >= 400 and api and method != "HEAD":
            body = response.json()
            ok = {"error", "hint", "location", "detail"} <= set(body)
        if not ok:
            wrong.append(f"{method} {url} as {credential}: {status} (want {want or 'allowed'})")
    assert not wrong, "\n".join(wrong)
