"""The web pages: server-rendered (Jinja2), with a little JavaScript for the live log."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from osbake.arch import Arch
from osbake.diff import render
from osbake.errors import OsbakeError, UsageError
from osbake.service import (
    auth,
    boot_settings,
    build_diff,
    builds,
    configs,
    retention,
    schedules,
    views,
)
from osbake.service.deps import (
    CONFIGURATION_BODY,
    LINE,
    MAX_ID,
    REPORT_BODY,
    Admin,
    Builder,
    ConfigName,
    ConsoleDep,
    Id,
    PrincipalDep,
    SessionDep,
    Viewer,
    csrf_token,
    safe_next,
)
from osbake.service.limits import max_body
from osbake.service.models import (
    Build,
    BuildState,
    Configuration,
    Role,
    Schedule,
    Token,
    User,
    now,
)
from osbake.service.problems import NotFound

router = APIRouter(include_in_schema=False)


def page(
    request: Request, name: str, who: Any, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        name,
        {"who": who, "csrf": csrf_token(request), "Role": Role, **context},
        status_code=status_code,
    )
    return response


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def form_of(request: Request) -> dict[str, Any]:
    return dict(await request.form())


# -- log-in --------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, who: PrincipalDep, next: str = "/") -> HTMLResponse:
    return page(request, "login.html", who, next=safe_next(next), failed=False)


@router.post("/login")
async def login(request: Request, console: ConsoleDep) -> Response:
    form = await form_of(request)
    sent = str(form.get("csrf_token") or "")
    if not sent or sent != request.session.get("csrf"):
        raise HTTPException(403, "the form is stale (CSRF check); reload the page")
    target = safe_next(str(form.get("next") or "/"))
    with console.db.session() as session:
        user = await run_in_threadpool(
            auth.authenticate, session, str(form.get("name", "")), str(form.get("password", ""))
        )
        if user is None:
            return page(request, "login.html", None, next=target, failed=True, status_code=401)
        secret = auth.open_session(session, user)
        session.commit()
    request.session.clear()  # a fresh cookie: no session fixation
    request.session["sid"] = secret
    return back(target)


@router.post("/logout")
async def logout(request: Request, session: SessionDep, who: Viewer) -> Response:
    """Log out: the session ends on the console, not only in this browser."""
    secret = request.session.get("sid")
    if secret:
        auth.close_session(session, str(secret))
        session.commit()
    request.session.clear()
    return back("/login")


# -- dashboard -----------------------------------------------------------------------------


@router.get("/")
def index(request: Request, session: SessionDep, who: Viewer) -> HTMLResponse:
    recent = session.scalars(select(Build).order_by(Build.id.desc()).limit(30)).all()
    configurations = session.scalars(select(Configuration).order_by(Configuration.name)).all()
    return page(
        request,
        "index.html",
        who,
        builds=[views.build_json(session, b) for b in recent],
        configurations=[views.configuration_json(c) for c in configurations],
    )


# -- configurations ------------------------------------------------------------------------


EXAMPLE = f"""name: my-image
distro: debian
release: bookworm
arch: [{Arch.AMD64}]
elements: [users, locale, timezone]
packages: [ca-certificates]
outputs: [tar]
"""


@router.get("/configurations/new")
def new_configuration(request: Request, who: Builder) -> HTMLResponse:
    return page(request, "configuration_new.html", who, form={"recipe": EXAMPLE}, error=None)


@router.post("/configurations", openapi_extra=max_body(CONFIGURATION_BODY))
async def create_configuration(request: Request, session: SessionDep, who: Builder) -> Response:
    form = await form_of(request)
    name = str(form.get("name", "")).strip()
    try:
        upload = form.get("archive")
        source = "web"
        if isinstance(upload, UploadFile) and upload.filename:
            files = await run_in_threadpool(configs.from_upload, upload.file)
            source = f"archive {upload.filename[:200]}"
        elif str(form.get("git_url", "")).strip():
            url = str(form["git_url"]).strip()
            if configs.is_local_git(url) and not who.allows(Role.ADMIN):
                raise UsageError(
                    "only an admin can import a repository from the console's disk",
                    hint="give an https:// or ssh:// URL",
                )
            files = await run_in_threadpool(
                configs.from_git,
                url,
                str(form.get("git_ref", "")).strip() or None,
                str(form.get("subdir", "")).strip(),
            )
            source = f"git {url}"
        else:
            files = configs.FileSet()
            files.add("recipe.yaml", str(form.get("recipe", "")).replace("\r\n", "\n").encode())
        recipe_file = str(form.get("recipe_file", "")).strip() or None
        configs.save_version(
            session,
            name,
            files,
            recipe_file=recipe_file,
            message=str(form.get("message", "")) or "created",
            author=who.name,
            source=source,
            description=str(form.get("description", "")),
        )
        session.commit()
    except OsbakeError as exc:
        session.rollback()
        form.pop("archive", None)
        form.pop("csrf_token", None)
        return page(request, "configuration_new.html", who, form=form, error=exc, status_code=422)
    return back(f"/configurations/{name}")


@router.get("/configurations/{name}")
def configuration_page(
    request: Request, name: ConfigName, session: SessionDep, who: Viewer
) -> HTMLResponse:
    configuration = builds.get_configuration(session, name)
    recent = session.scalars(
        select(Build)
        .where(Build.configuration_id == configuration.id)
        .order_by(Build.id.desc())
        .limit(20)
    ).all()
    plans = session.scalars(
        select(Schedule).where(Schedule.configuration_id == configuration.id)
    ).all()
    latest = configuration.versions[-1]
    return page(
        request,
        "configuration.html",
        who,
        configuration=configuration,
        versions=list(reversed(configuration.versions)),
        latest=latest,
        variants=sorted({t[0] or "" for t in latest.targets}),
        arches=sorted({t[1] for t in latest.targets}),
        builds=[views.build_json(session, b) for b in recent],
        schedules=[views.schedule_json(s) for s in plans],
        milestones=builds.MILESTONES,
        boot_test=views.boot_settings_json(configuration),
        datasources=boot_settings.DATASOURCES,
        hardware=boot_settings.HARDWARE,
    )


@router.post("/configurations/{name}/boot-test")
async def set_boot_test(
    request: Request, name: ConfigName, session: SessionDep, who: Builder
) -> Response:
    form = await form_of(request)
    configuration = builds.get_configuration(session, name)
    chosen = boot_settings.from_form(
        str(form.get("datasource", ""))[:64], str(form.get("hardware", ""))[:64]
    )
    boot_settings.apply(configuration, chosen)
    session.commit()
    return back(f"/configurations/{name}")


@router.get("/configurations/{name}/edit")
def edit_page(
    request: Request,
    name: ConfigName,
    session: SessionDep,
    who: Builder,
    file: Annotated[str | None, Query(max_length=1024, pattern=LINE)] = None,
) -> HTMLResponse:
    configuration = builds.get_configuration(session, name)
    latest = configuration.versions[-1]
    path = file or latest.recipe_file
    text = next((f.data.decode(errors="replace") for f in latest.files if f.path == path), "")
    return page(
        request,
        "configuration_edit.html",
        who,
        configuration=configuration,
        latest=latest,
        path=path,
        text=text,
        error=None,
    )


@router.post("/configurations/{name}/edit", openapi_extra=max_body(CONFIGURATION_BODY))
async def edit(request: Request, name: ConfigName, session: SessionDep, who: Builder) -> Response:
    form = await form_of(request)
    configuration = builds.get_configuration(session, name)
    latest = configuration.versions[-1]
    path = str(form.get("path") or latest.recipe_file)
    text = str(form.get("text", "")).replace("\r\n", "\n")
    files = configs.fileset(latest)
    try:
        mode = files.files.get(path, (b"", 0o644))[1]
        files.add(path, text.encode(), mode)
        configs.save_version(
            session,
            name,
            files,
            recipe_file=latest.recipe_file,
            message=str(form.get("message", "")) or f"edit {path}",
            author=who.name,
            source="web edit",
        )
        session.commit()
    except OsbakeError as exc:
        session.rollback()
        return page(
            request,
            "configuration_edit.html",
            who,
            configuration=configuration,
            latest=latest,
            path=path,
            text=text,
            error=exc,
            status_code=422,
        )
    return back(f"/configurations/{name}")


@router.get("/configurations/{name}/versions/{number}")
def version_page(
    request: Request,
    name: ConfigName,
    number: Id,
    session: SessionDep,
    who: Viewer,
    file: Annotated[str | None, Query(max_length=1024, pattern=LINE)] = None,
) -> HTMLResponse:
    configuration = builds.get_configuration(session, name)
    version = builds.get_version(session, configuration, number)
    shown = file or version.recipe_file
    text = next((f.data.decode(errors="replace") for f in version.files if f.path == shown), None)
    return page(
        request,
        "version.html",
        who,
        configuration=configuration,
        version=version,
        shown=shown,
        text=text,
    )


@router.get("/configurations/{name}/diff")
def diff_page(
    request: Request,
    name: ConfigName,
    session: SessionDep,
    who: Viewer,
    a: Annotated[int, Query(ge=1, le=MAX_ID)],
    b: Annotated[int, Query(ge=1, le=MAX_ID)],
) -> HTMLResponse:
    configuration = builds.get_configuration(session, name)
    text = configs.diff(
        builds.get_version(session, configuration, a), builds.get_version(session, configuration, b)
    )
    return page(
        request, "diff.html", who, configuration=configuration, a=a, b=b, lines=text.splitlines()
    )


@router.post("/configurations/{name}/builds")
async def start_build(
    request: Request, name: ConfigName, session: SessionDep, console: ConsoleDep, who: Builder
) -> Response:
    form = await form_of(request)
    configuration = builds.get_configuration(session, name)
    number = str(form.get("version", "")).strip()
    chosen = int(number) if number.isdigit() and len(number) < 10 else None
    version = builds.get_version(session, configuration, chosen)
    milestone = str(form.get("milestone_text", "")).strip() or str(form.get("milestone", "daily"))
    queued = builds.request_builds(
        session,
        console.queue,
        version,
        variant=str(form.get("variant", "")) or None,
        arch=str(form.get("arch", "")) or None,
        matrix=form.get("matrix") == "on",
        milestone=milestone,
        requested_by=who.name,
    )
    if len(queued) == 1:
        return back(f"/builds/{queued[0].id}")
    return back(f"/configurations/{name}")


@router.post("/configurations/{name}/schedules")
async def add_schedule(
    request: Request, name: ConfigName, session: SessionDep, who: Builder
) -> Response:
    form = await form_of(request)
    configuration = builds.get_configuration(session, name)
    schedules.create(
        session,
        configuration,
        str(form.get("cron", "")),
        milestone=str(form.get("milestone", "daily")) or "daily",
        variant=str(form.get("variant", "")) or None,
        arch=str(form.get("arch", "")) or None,
        matrix=form.get("matrix") == "on",
    )
    return back(f"/configurations/{name}")


@router.post("/schedules/{schedule_id}/delete")
async def delete_schedule(schedule_id: Id, session: SessionDep, who: Builder) -> Response:
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        raise NotFound(f"there is no schedule {schedule_id}")
    name = schedule.configuration.name
    schedules.delete(session, schedule)
    return back(f"/configurations/{name}")


# -- builds --------------------------------------------------------------------------------


@router.get("/builds/{build_id}")
def build_page(
    request: Request, build_id: Id, session: SessionDep, console: ConsoleDep, who: Viewer
) -> HTMLResponse:
    build = builds.get_build(session, build_id)
    data = views.build_json(session, build)
    tail = builds.failure_tail(console.settings, build) if build.state == BuildState.FAILED else []
    previous = build_diff.previous_build(session, build) if build.manifest is not None else None
    return page(
        request,
        "build.html",
        who,
        build=data,
        tail=tail,
        previous=previous.id if previous is not None else None,
    )


@router.post("/builds/{build_id}/cancel")
async def cancel_build(build_id: Id, session: SessionDep, who: Builder) -> Response:
    builds.cancel(session, builds.get_build(session, build_id))
    return back(f"/builds/{build_id}")


@router.post("/builds/{build_id}/retry")
async def retry_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Builder
) -> Response:
    fresh = builds.retry(session, console.queue, builds.get_build(session, build_id), who.name)
    return back(f"/builds/{fresh.id}")


@router.post("/builds/{build_id}/bless")
async def bless_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Admin
) -> Response:
    retention.bless(
        session,
        console.settings,
        builds.get_build(session, build_id),
        who.name,
        console.bless_hooks,
    )
    return back(f"/builds/{build_id}")


@router.get("/builds/{build_id}/manifest")
def manifest_page(request: Request, build_id: Id, session: SessionDep, who: Viewer) -> HTMLResponse:
    build = builds.get_build(session, build_id)
    if build.manifest is None:
        raise NotFound(f"build {build_id} has no manifest (it did not succeed)")
    return page(
        request,
        "manifest.html",
        who,
        build=views.build_json(session, build),
        manifest=build.manifest,
    )


@router.get("/builds/{build_id}/diff/{other_id}")
def build_diff_page(
    request: Request, build_id: Id, other_id: Id, session: SessionDep, who: Viewer
) -> HTMLResponse:
    result = build_diff.build_diff(session, build_id, other_id)
    return page(
        request,
        "build_diff.html",
        who,
        old=build_id,
        new=other_id,
        identical=result.empty,
        lines=render(result).splitlines(),
    )


# -- search, lookup, admin -----------------------------------------------------------------


@router.get("/search")
def search_page(
    request: Request,
    session: SessionDep,
    who: Viewer,
    package: Annotated[str, Query(max_length=256, pattern=LINE)] = "",
    version: Annotated[str, Query(max_length=256, pattern=LINE)] = "",
) -> HTMLResponse:
    results = (
        builds.search_packages(session, package.strip(), version.strip() or None)
        if package.strip()
        else []
    )
    return page(
        request,
        "search.html",
        who,
        package=package,
        version=version,
        results=[(views.build_json(session, b), p) for b, p in results],
    )


@router.get("/lookup")
def lookup_page(request: Request, who: Viewer) -> HTMLResponse:
    return page(request, "lookup.html", who, origin=None, error=None, sha256="", manifest="")


@router.post("/lookup", openapi_extra=max_body(REPORT_BODY))
async def lookup(request: Request, session: SessionDep, who: Viewer) -> HTMLResponse:
    form = await form_of(request)
    sha256 = str(form.get("sha256", "")).strip()
    text = str(form.get("manifest", "")).strip()
    upload = form.get("manifest_file")
    if isinstance(upload, UploadFile) and upload.filename:
        text = (await upload.read()).decode(errors="replace")
    sha256 = sha256 if len(sha256) <= 128 else sha256[:128]
    try:
        manifest = None
        if not sha256:
            try:
                manifest = json.loads(text) if text else None
            except ValueError as exc:
                raise UsageError(
                    f"the manifest is not JSON: {exc}", hint="paste <image>.manifest.json"
                ) from None
        origin = builds.find_origin(session, sha256=sha256 or None, manifest=manifest)
    except OsbakeError as exc:
        return page(
            request,
            "lookup.html",
            who,
            origin=None,
            error=exc,
            sha256=sha256,
            manifest=text,
            status_code=404 if isinstance(exc, NotFound) else 422,
        )
    assert origin.build is not None
    return page(
        request,
        "lookup.html",
        who,
        origin=origin,
        build=views.build_json(session, origin.build),
        error=None,
        sha256=sha256,
        manifest=text,
    )


@router.get("/admin")
def admin_page(
    request: Request, session: SessionDep, console: ConsoleDep, who: Admin, token: str = ""
) -> HTMLResponse:
    usage = retention.disk_usage(session, console.settings)
    users = session.scalars(select(User).order_by(User.id)).all()
    tokens = session.scalars(select(Token).order_by(Token.id)).all()
    purged = session.scalar(select(func.count(Build.id)).where(Build.purged.is_(True))) or 0
    return page(
        request,
        "admin.html",
        who,
        usage=usage,
        users=users,
        tokens=tokens,
        purged=purged,
        settings=console.settings,
        new_token=request.session.pop("new_token", None),
    )


@router.post("/admin/users")
async def admin_add_user(request: Request, session: SessionDep, who: Admin) -> Response:
    form = await form_of(request)
    role = auth.parse_role(str(form.get("role", "viewer")))
    auth.check_grant(who.role, role)
    auth.create_user(session, str(form.get("name", "")), str(form.get("password", "")), role)
    session.commit()
    return back("/admin")


@router.post("/admin/tokens")
async def admin_add_token(request: Request, session: SessionDep, who: Admin) -> Response:
    form = await form_of(request)
    user = session.get(User, who.user_id) if who.user_id else None
    days = str(form.get("expires_days", "")).strip()
    if days and not (days.isdigit() and 1 <= int(days) <= 3650):
        raise UsageError(f"'{days[:20]}' is not a number of days", hint="1 to 3650, or empty")
    _, secret = auth.create_token(
        session,
        str(form.get("name", "token"))[:128],
        auth.parse_role(str(form.get("role", "viewer"))),
        granter=who.role,
        user_id=user.id if user else None,
        created_by=who.name,
        expires=now() + int(days) * 86400 if days else None,
    )
    session.commit()
    request.session["new_token"] = secret
    return back("/admin")


@router.post("/admin/tokens/{token_id}/delete")
async def admin_revoke_token(token_id: Id, session: SessionDep, who: Admin) -> Response:
    token = session.get(Token, token_id)
    if token is None:
        raise NotFound(f"there is no token {token_id}")
    auth.revoke_token(token)
    session.commit()
    return back("/admin")


@router.post("/admin/gc")
async def admin_gc(session: SessionDep, console: ConsoleDep, who: Admin) -> Response:
    retention.collect(session, console.settings, console.in_use)
    return back("/admin")
