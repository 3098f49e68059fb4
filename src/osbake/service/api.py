"""The REST API (/api): everything the web page can do, for scripts and workers.

Routes are thin: they check who asks, parse the request and call the services
in configs, builds, schedules and retention.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Body,
    File,
    Form,
    Header,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

import osbake
from osbake.errors import Location, UsageError
from osbake.service import auth, builds, configs, retention, schedules, views
from osbake.service.app import (
    Account,
    Admin,
    Builder,
    ConsoleDep,
    Principal,
    SessionDep,
    Viewer,
    WorkerDep,
)
from osbake.service.limits import MIB, max_body
from osbake.service.models import Build, BuildState, Configuration, Role, Schedule, Token, User, now
from osbake.service.problems import Conflict, NotFound, TooLarge, errors

router = APIRouter(prefix="/api")

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


# -- status, users and tokens --------------------------------------------------------------


@router.get("/status", tags=["console"])
def status(session: SessionDep, who: Viewer) -> dict[str, Any]:
    """Version, queue length and the running builds."""
    queued = session.scalars(select(Build).where(Build.state == BuildState.QUEUED)).all()
    running = session.scalars(select(Build).where(Build.state == BuildState.RUNNING)).all()
    return {
        "osbake": osbake.__version__,
        "you": {"name": who.name, "role": who.role},
        "queued": len(queued),
        "running": [views.build_json(session, b) for b in running],
    }


class TokenRequest(BaseModel):
    name: Short = "token"
    role: Literal["viewer", "builder", "admin", "worker"] = "viewer"
    expires_days: int | None = Field(
        None, ge=1, le=3650, description="days until the token expires (default: never)"
    )


def token_json(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "created": views.iso(token.created),
        "created_by": token.created_by,
        "expires": views.iso(token.expires),
        "revoked": views.iso(token.revoked),
        "last_used": views.iso(token.last_used),
        "valid": token.valid(),
    }


def owns(who: Principal, token: Token) -> bool:
    """Admins see every token; others their own user's tokens, and a token itself."""
    if who.allows(Role.ADMIN):
        return True
    if who.token_id is not None and who.token_id == token.id:
        return True
    return who.user_id is not None and token.user_id == who.user_id


@router.post("/tokens", tags=["access"], status_code=201)
def create_token(body: TokenRequest, session: SessionDep, who: Account) -> dict[str, Any]:
    """Make an API token (the secret is shown once).

    Nobody makes a token with more rights than the credential that asks for it;
    only admins make worker tokens. The token belongs to the asker's user.
    """
    expires = now() + body.expires_days * 86400 if body.expires_days else None
    token, secret = auth.create_token(
        session,
        body.name,
        Role(body.role),
        granter=who.role,
        user_id=who.user_id,
        created_by=who.name,
        expires=expires,
    )
    session.commit()
    return {**token_json(token), "token": secret}


@router.get("/tokens", tags=["access"])
def list_tokens(session: SessionDep, who: Account) -> list[dict[str, Any]]:
    """Tokens with their expiry and state: an admin sees all, others their own."""
    return [
        token_json(t)
        for t in session.scalars(select(Token).order_by(Token.id)).all()
        if owns(who, t)
    ]


@router.delete("/tokens/{token_id}", tags=["access"], status_code=204)
def revoke_token(token_id: Id, session: SessionDep, who: Account) -> Response:
    """Revoke a token at once (an admin any, others their own)."""
    token = session.get(Token, token_id)
    if token is None or not owns(who, token):
        raise NotFound(f"there is no token {token_id} of yours")
    auth.revoke_token(token)
    session.commit()
    return Response(status_code=204)


class UserRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=auth.USER_NAME.pattern)
    password: str = Field(min_length=8, max_length=auth.MAX_PASSWORD)
    role: Literal["viewer", "builder", "admin"] = "viewer"


@router.post("/users", tags=["access"], status_code=201, responses=errors(409))
def create_user(body: UserRequest, session: SessionDep, who: Admin) -> dict[str, Any]:
    auth.check_grant(who.role, Role(body.role))
    user = auth.create_user(session, body.name, body.password, Role(body.role))
    session.commit()
    return {"id": user.id, "name": user.name, "role": user.role}


@router.get("/users", tags=["access"])
def list_users(session: SessionDep, who: Admin) -> list[dict[str, Any]]:
    return [
        {"id": u.id, "name": u.name, "role": u.role}
        for u in session.scalars(select(User).order_by(User.id)).all()
    ]


# -- configurations ------------------------------------------------------------------------


class ConfigurationRequest(BaseModel):
    name: str = Field(max_length=128, pattern=configs.NAME_PATTERN)
    files: dict[str, str] = Field(
        default_factory=dict,
        max_length=configs.MAX_FILES,
        description="path -> text content (recipe, element scripts, ...)",
    )
    files_base64: dict[str, str] = Field(
        default_factory=dict, max_length=configs.MAX_FILES, description="path -> base64 content"
    )
    executable: list[str] = Field(
        default_factory=list, max_length=configs.MAX_FILES, description="paths to mark executable"
    )
    recipe_file: str | None = Field(None, max_length=512, pattern=LINE)
    message: Text = ""
    description: Text = ""


@router.get("/configurations", tags=["configurations"])
def list_configurations(session: SessionDep, who: Viewer) -> list[dict[str, Any]]:
    return [
        views.configuration_json(c)
        for c in session.scalars(select(Configuration).order_by(Configuration.name)).all()
    ]


@router.post(
    "/configurations",
    tags=["configurations"],
    status_code=201,
    openapi_extra=max_body(CONFIGURATION_BODY),
)
def save_configuration(
    body: ConfigurationRequest, session: SessionDep, who: Builder
) -> dict[str, Any]:
    """Create a configuration or store a new version of it (validated first)."""
    files = configs.FileSet()
    for path, text in body.files.items():
        try:
            data = text.encode()
        except UnicodeError:
            raise UsageError(
                "the text is not valid UTF-8 (use files_base64 for binary files)",
                location=Location(key=f"files.{path[:200]}"),
            ) from None
        files.add(path, data, 0o755 if path in body.executable else 0o644)
    for path, encoded in body.files_base64.items():
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise UsageError(
                "this is not base64", location=Location(key=f"files_base64.{path[:200]}")
            ) from None
        files.add(path, raw, 0o755 if path in body.executable else 0o644)
    version, created = configs.save_version(
        session,
        body.name,
        files,
        recipe_file=body.recipe_file,
        message=body.message,
        author=who.name,
        source="api",
        description=body.description,
    )
    session.commit()
    return {"configuration": body.name, **views.version_json(version), "new_version": created}


@router.post(
    "/configurations/import",
    tags=["configurations"],
    status_code=201,
    openapi_extra=max_body(CONFIGURATION_BODY),
)
async def import_configuration(
    session: SessionDep,
    who: Builder,
    name: Annotated[str, Form(max_length=128, pattern=configs.NAME_PATTERN)],
    git_url: Annotated[str | None, Form(max_length=2000, pattern=LINE)] = None,
    git_ref: Annotated[str | None, Form(max_length=256, pattern=LINE)] = None,
    subdir: Annotated[str, Form(max_length=1024, pattern=LINE)] = "",
    directory: Annotated[str | None, Form(max_length=4096, pattern=LINE)] = None,
    recipe_file: Annotated[str | None, Form(max_length=512, pattern=LINE)] = None,
    message: Annotated[str, Form(max_length=64 << 10, pattern=PLAIN)] = "",
    archive: Annotated[UploadFile | None, File()] = None,
) -> dict[str, Any]:
    """Import from a tar archive (upload), a git repository, or (admins) a directory on the host."""
    if archive is not None and archive.filename:
        files = await run_in_threadpool(configs.from_upload, archive.file)
        source = f"archive {archive.filename}"
    elif git_url:
        if configs.is_local_git(git_url) and not who.allows(Role.ADMIN):
            raise HTTPException(
                403, "only an admin can import a repository from the console's disk"
            )
        files = await run_in_threadpool(configs.from_git, git_url, git_ref, subdir)
        source = (
            f"git {git_url}" + (f"@{git_ref}" if git_ref else "") + (f" {subdir}" if subdir else "")
        )
    elif directory:
        if not who.allows(Role.ADMIN):
            raise HTTPException(403, "only an admin can import from the console's own disk")
        files = configs.from_directory(Path(directory))
        source = f"directory {directory}"
    else:
        raise UsageError("give an archive, a git_url or a directory to import from")
    version, created = configs.save_version(
        session,
        name,
        files,
        recipe_file=recipe_file,
        message=message or f"import from {source}",
        author=who.name,
        source=source,
    )
    session.commit()
    return {"configuration": name, **views.version_json(version), "new_version": created}


@router.get("/configurations/{name}", tags=["configurations"])
def get_configuration(name: ConfigName, session: SessionDep, who: Viewer) -> dict[str, Any]:
    configuration = builds.get_configuration(session, name)
    data = views.configuration_json(configuration)
    data["versions"] = [views.version_json(v) for v in configuration.versions]
    data["schedules"] = [
        views.schedule_json(s)
        for s in session.scalars(
            select(Schedule).where(Schedule.configuration_id == configuration.id)
        )
    ]
    return data


@router.get("/configurations/{name}/versions/{number}", tags=["configurations"])
def get_version(name: ConfigName, number: Id, session: SessionDep, who: Viewer) -> dict[str, Any]:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    return views.version_json(version, files=True)


@router.get("/configurations/{name}/versions/{number}/files/{path:path}", tags=["configurations"])
def get_file(name: ConfigName, number: Id, path: str, session: SessionDep, who: Viewer) -> Response:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    for item in version.files:
        if item.path == path:
            return Response(item.data, media_type="text/plain; charset=utf-8")
    raise NotFound(f"version {number} of '{name}' has no file '{path}'")


@router.get("/configurations/{name}/versions/{number}/archive", tags=["configurations"])
def get_archive(name: ConfigName, number: Id, session: SessionDep, who: Viewer) -> Response:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    return Response(
        configs.archive(version),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}-v{number}.tar.gz"'},
    )


@router.get(
    "/configurations/{name}/diff", tags=["configurations"], response_class=PlainTextResponse
)
def diff(
    name: ConfigName,
    session: SessionDep,
    who: Viewer,
    a: Annotated[int, Query(ge=1, le=MAX_ID)],
    b: Annotated[int, Query(ge=1, le=MAX_ID)],
) -> str:
    """A unified diff between versions a and b."""
    configuration = builds.get_configuration(session, name)
    return configs.diff(
        builds.get_version(session, configuration, a), builds.get_version(session, configuration, b)
    )


# -- schedules -----------------------------------------------------------------------------


class ScheduleRequest(BaseModel):
    cron: str = Field(
        max_length=128, pattern=LINE, description="five-field cron (UTC) or @nightly / @weekly"
    )
    milestone: Short = "daily"
    variant: Short | None = None
    arch: Short | None = None
    matrix: bool = True


@router.post("/configurations/{name}/schedules", tags=["schedules"], status_code=201)
def create_schedule(
    name: ConfigName, body: ScheduleRequest, session: SessionDep, who: Builder
) -> dict[str, Any]:
    configuration = builds.get_configuration(session, name)
    schedule = schedules.create(
        session,
        configuration,
        body.cron,
        milestone=body.milestone,
        variant=body.variant,
        arch=body.arch,
        matrix=body.matrix,
    )
    return views.schedule_json(schedule)


@router.get("/schedules", tags=["schedules"])
def list_schedules(session: SessionDep, who: Viewer) -> list[dict[str, Any]]:
    return [views.schedule_json(s) for s in session.scalars(select(Schedule).order_by(Schedule.id))]


@router.delete("/schedules/{schedule_id}", tags=["schedules"], status_code=204)
def delete_schedule(schedule_id: Id, session: SessionDep, who: Builder) -> Response:
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        raise NotFound(f"there is no schedule {schedule_id}")
    schedules.delete(session, schedule)
    return Response(status_code=204)


# -- builds --------------------------------------------------------------------------------


class BuildRequest(BaseModel):
    configuration: str = Field(max_length=128, pattern=configs.NAME_PATTERN)
    version: int | None = Field(
        None, ge=1, le=MAX_ID, description="configuration version (default: the latest)"
    )
    variant: Short | None = None
    arch: Short | None = None
    matrix: bool = Field(False, description="build every variant x arch")
    milestone: Short = Field("daily", description="daily, alpha, beta, rc, final or free text")


@router.post("/builds", tags=["builds"], status_code=201, responses=errors(404))
def request_build(
    body: BuildRequest, session: SessionDep, console: ConsoleDep, who: Builder
) -> list[dict[str, Any]]:
    """Queue a build (or the whole matrix) of a configuration version."""
    version = builds.get_version(
        session, builds.get_configuration(session, body.configuration), body.version
    )
    queued = builds.request_builds(
        session,
        console.queue,
        version,
        variant=body.variant,
        arch=body.arch,
        matrix=body.matrix,
        milestone=body.milestone,
        requested_by=who.name,
    )
    return [views.build_json(session, b) for b in queued]


@router.get("/builds", tags=["builds"], responses=errors(404))
def list_builds(
    session: SessionDep,
    who: Viewer,
    state: Annotated[BuildState | None, Query()] = None,
    configuration: Annotated[
        str | None, Query(max_length=128, pattern=configs.NAME_PATTERN)
    ] = None,
    milestone: Annotated[str | None, Query(max_length=64, pattern=LINE)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    query = select(Build).order_by(Build.id.desc()).limit(limit)
    if state:
        query = query.where(Build.state == state)
    if configuration:
        query = query.where(
            Build.configuration_id == builds.get_configuration(session, configuration).id
        )
    if milestone:
        query = query.where(Build.milestone == milestone)
    return [views.build_json(session, b) for b in session.scalars(query).all()]


@router.get("/builds/{build_id}", tags=["builds"])
def get_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Viewer
) -> dict[str, Any]:
    """A build: state, steps, queue position, elapsed time; a failed one with its log's tail."""
    build = builds.get_build(session, build_id)
    data = views.build_json(session, build)
    if build.state == BuildState.FAILED:
        data["log_tail"] = builds.failure_tail(console.settings, build)
    return data


@router.post("/builds/{build_id}/cancel", tags=["builds"], responses=errors(409))
def cancel_build(build_id: Id, session: SessionDep, who: Builder) -> dict[str, Any]:
    build = builds.cancel(session, builds.get_build(session, build_id))
    return views.build_json(session, build)


@router.post("/builds/{build_id}/retry", tags=["builds"], status_code=201, responses=errors(409))
def retry_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Builder
) -> dict[str, Any]:
    """Queue the same configuration version, variant, arch and milestone again ("rebuild this")."""
    fresh = builds.retry(session, console.queue, builds.get_build(session, build_id), who.name)
    return views.build_json(session, fresh)


@router.post("/builds/{build_id}/bless", tags=["builds"], responses=errors(409))
def bless_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Admin
) -> dict[str, Any]:
    """Mark a build as released: only when its boot test passed."""
    build = retention.bless(
        session,
        console.settings,
        builds.get_build(session, build_id),
        who.name,
        console.bless_hooks,
    )
    return views.build_json(session, build)


@router.get("/builds/{build_id}/log", tags=["builds"], response_class=PlainTextResponse)
def build_log(build_id: Id, session: SessionDep, console: ConsoleDep, who: Viewer) -> str:
    """The build's log as plain text."""
    builds.get_build(session, build_id)
    lines = (builds.render_line(e) for e in builds.read_events(console.settings, build_id))
    return "".join(f"{line}\n" for line in lines if line is not None)


@router.get(
    "/builds/{build_id}/events",
    tags=["builds"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def build_events(
    build_id: Id,
    request: Request,
    console: ConsoleDep,
    who: Viewer,
    after: Annotated[int, Query(ge=-1, le=MAX_ID)] = -1,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Server-sent events: the build's events as they happen, then `state` updates.

    Each event's id is its sequence number; reconnecting with Last-Event-ID (or
    ?after=N) resumes after it. The stream ends when the build has finished
    (`event: end`), or after a while without it: reconnect then (browsers do).
    """
    last = last_event_id.strip() if last_event_id else ""
    start = min(int(last), MAX_ID) + 1 if last.isdigit() else after + 1

    def snapshot() -> dict[str, Any]:
        with console.db.session() as session:
            return views.build_json(session, builds.get_build(session, build_id))

    await run_in_threadpool(snapshot)  # 404 before the stream starts
    deadline = time.monotonic() + console.settings.stream_seconds

    async def stream() -> AsyncIterator[str]:
        position = start
        previous: str | None = None
        while True:
            state = await run_in_threadpool(snapshot)
            events = await run_in_threadpool(
                builds.read_events, console.settings, build_id, position
            )
            for event in events:
                position = event["seq"] + 1
                yield f"id: {event['seq']}\nevent: build\ndata: {json.dumps(event)}\n\n"
            summary = json.dumps(state)
            if summary != previous:
                previous = summary
                yield f"event: state\ndata: {summary}\n\n"
            if BuildState(state["state"]).finished and not events:
                yield "event: end\ndata: {}\n\n"
                return
            if await request.is_disconnected() or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/builds/{build_id}/manifest", tags=["artifacts"])
def build_manifest(build_id: Id, session: SessionDep, who: Viewer) -> dict[str, Any]:
    build = builds.get_build(session, build_id)
    if build.manifest is None:
        raise NotFound(f"build {build_id} has no manifest (it did not succeed)")
    return build.manifest


ArtifactName = Annotated[str, PathParam(max_length=255, pattern=r"^[^/\x00-\x1f\x7f]+$")]


ARTIFACT_URL = "/builds/{build_id}/artifacts/{file}"
ARTIFACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}, "text/plain": {}}}
}


@router.get(
    ARTIFACT_URL,
    tags=["artifacts"],
    response_class=FileResponse,
    responses=ARTIFACT_RESPONSES,
    operation_id="download_artifact",
)
@router.head(
    ARTIFACT_URL,
    tags=["artifacts"],
    response_class=FileResponse,
    responses=ARTIFACT_RESPONSES,
    operation_id="artifact_head",
)
async def download(
    build_id: Id, file: ArtifactName, request: Request, console: ConsoleDep, who: Viewer
) -> Response:
    """Download an artifact (HTTP range requests resume; HEAD tells its size).

    Its sha256 is in X-Checksum-Sha256, and at FILE.sha256. Only the build's
    verified artifacts and its manifest are served.
    """

    def find() -> tuple[str, Path]:
        with console.db.session() as session:
            build = builds.get_build(session, build_id)
            if build.purged:
                raise NotFound(
                    f"the artifacts of build {build_id} were removed by retention",
                    hint="rebuild it (its configuration version is kept)",
                )
            folder = builds.artifact_dir(console.settings, build_id)
            listed = {a.file: a.sha256 for a in build.artifacts}
            if build.manifest is not None:
                listed.setdefault(f"{build.manifest.get('image')}.manifest.json", "")
            base = file.removesuffix(".sha256")
            if file.endswith(".sha256") and listed.get(base):
                return f"{listed[base]}  {base}\n", folder
            if file in listed:
                path = folder / file
                if not path.is_file():
                    raise NotFound(
                        f"the file '{file}' of build {build_id} is missing on the console's disk",
                        hint="rebuild it, and tell the console's admin",
                    )
                return listed[file], path
        raise NotFound(f"build {build_id} has no artifact '{file}'")

    digest, path = await run_in_threadpool(find)
    if file.endswith(".sha256") and path.is_dir():
        return PlainTextResponse(digest)
    headers = {"X-Checksum-Sha256": digest} if digest else {}
    return HeldFile(console.in_use, build_id, path, filename=file, headers=headers)


class HeldFile(FileResponse):
    """A file response that marks its build as in use (retention leaves it) while it is sent."""

    def __init__(self, in_use: retention.InUse, build_id: int, path: Path, **kwargs: Any) -> None:
        super().__init__(path, media_type="application/octet-stream", **kwargs)
        self.in_use = in_use
        self.build_id = build_id

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with self.in_use.hold(self.build_id):
            await super().__call__(scope, receive, send)


BUILD_SUMMARY = (
    "id",
    "configuration",
    "version",
    "variant",
    "arch",
    "milestone",
    "state",
    "image",
    "blessed",
    "finished",
    "artifacts",
)


@router.get("/search/packages", tags=["artifacts"])
def search_packages(
    session: SessionDep,
    who: Viewer,
    name: Annotated[str, Query(min_length=1, max_length=256, pattern=LINE)],
    version: Annotated[str | None, Query(max_length=256, pattern=LINE)] = None,
) -> list[dict[str, Any]]:
    """Which images contain package NAME (at VERSION)?"""
    return [
        {
            "package": p.name,
            "version": p.version,
            "arch": p.arch,
            "build": {k: v for k, v in views.build_json(session, b).items() if k in BUILD_SUMMARY},
        }
        for b, p in builds.search_packages(session, name, version)
    ]


class LookupRequest(BaseModel):
    sha256: str | None = Field(None, pattern=r"^\s*[0-9a-fA-F]{64}\s*$")
    manifest: dict[str, Any] | None = None


@router.post(
    "/lookup", tags=["artifacts"], responses=errors(404), openapi_extra=max_body(REPORT_BODY)
)
def lookup(body: LookupRequest, session: SessionDep, who: Viewer) -> dict[str, Any]:
    """From an artifact's sha256 or its manifest to the build, configuration version and variant."""
    origin = builds.find_origin(session, sha256=body.sha256, manifest=body.manifest)
    assert origin.build is not None
    return {
        "how": origin.how,
        "build": views.build_json(session, origin.build),
        "configuration": origin.build.configuration.name,
        "version": origin.build.version.number,
        "variant": origin.build.variant,
        "arch": origin.build.arch,
        "rebuild": f"/api/builds/{origin.build.id}/retry",
        "candidates": [b.id for b in origin.candidates],
    }


# -- disk ----------------------------------------------------------------------------------


@router.get("/disk", tags=["retention"])
def disk(session: SessionDep, console: ConsoleDep, who: Viewer) -> dict[str, Any]:
    usage = retention.disk_usage(session, console.settings)
    return {
        "artifacts_bytes": usage.total,
        "budget_bytes": usage.budget,
        "free_bytes": usage.free_on_disk,
        "keep_per_channel": console.settings.keep_builds,
        "by_configuration": usage.by_configuration,
        "builds_with_files": usage.builds_with_files,
    }


@router.post("/gc", tags=["retention"])
def collect(session: SessionDep, console: ConsoleDep, who: Admin) -> dict[str, Any]:
    """Free the artifacts of every build retention does not keep (the console does it anyway)."""
    result = retention.collect(session, console.settings, console.in_use)
    return {
        "purged": result.purged,
        "freed_bytes": result.freed,
        "over_budget_bytes": result.over_budget,
    }


# -- workers -------------------------------------------------------------------------------
# Only worker tokens call these, and after the claim only the token that claimed a
# build may report on it (409 for any other).


@router.get("/worker/hello", tags=["workers"])
def worker_hello(console: ConsoleDep, who: WorkerDep) -> dict[str, Any]:
    """What a worker needs: the queue to take builds from."""
    return {"osbake": osbake.__version__, "queue": console.settings.queue_url}


class ClaimRequest(BaseModel):
    worker: Short


@router.post("/worker/builds/{build_id}/claim", tags=["workers"], responses=errors(409))
def worker_claim(
    build_id: Id, body: ClaimRequest, session: SessionDep, who: WorkerDep
) -> dict[str, Any]:
    build = builds.claim(session, build_id, body.worker, who.token_id)
    return {
        "id": build.id,
        "recipe_file": build.version.recipe_file,
        "variant": build.variant,
        "arch": build.arch,
        "configuration": build.configuration.name,
        "version": build.version.number,
    }


@router.get(
    "/worker/builds/{build_id}/config.tar.gz",
    tags=["workers"],
    responses={**errors(409), 200: {"content": {"application/gzip": {}}}},
)
def worker_configuration(build_id: Id, session: SessionDep, who: WorkerDep) -> Response:
    build = builds.claimed(session, build_id, who.token_id)
    return Response(configs.archive(build.version), media_type="application/gzip")


@router.post(
    "/worker/builds/{build_id}/events",
    tags=["workers"],
    responses=errors(409),
    openapi_extra=max_body(REPORT_BODY),
)
def worker_events(
    build_id: Id,
    events: Annotated[list[dict[str, Any]], Body(max_length=100_000)],
    session: SessionDep,
    console: ConsoleDep,
    who: WorkerDep,
) -> dict[str, Any]:
    """A batch of the build's events (also the worker's heartbeat); answers whether to cancel."""
    build = builds.claimed(session, build_id, who.token_id)
    return {"cancel": builds.record_events(session, console.settings, build, events)}


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


@router.put(
    "/worker/builds/{build_id}/files/{file}",
    tags=["workers"],
    status_code=201,
    responses=errors(409),
    openapi_extra={
        **max_body(256 << 30),
        "requestBody": {"content": {"application/octet-stream": {"schema": {}}}},
    },
)
async def worker_upload(
    build_id: Id,
    file: ArtifactName,
    request: Request,
    console: ConsoleDep,
    who: WorkerDep,
    x_checksum_sha256: Annotated[
        Sha256, Header(description="the sha256 the worker claims for the file")
    ],
) -> dict[str, Any]:
    """Upload an artifact; the console hashes it as it arrives and refuses it (422)
    unless it is the sha256 the worker claims. Then it is kept as a verified upload."""
    name = configs.safe_path(file)
    if "/" in name or name.startswith("."):
        raise UsageError(f"'{file}' is not an artifact file name", location=Location(key="file"))

    def check() -> None:
        with console.db.session() as session:
            build = builds.claimed(session, build_id, who.token_id)
            if build.state != BuildState.RUNNING:
                raise Conflict(f"build {build_id} is {build.state}, not running")

    await run_in_threadpool(check)
    folder = builds.artifact_dir(console.settings, build_id)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.{uuid.uuid4().hex}.partial"
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > console.settings.max_upload:
                    raise TooLarge(
                        f"the file is larger than the console accepts "
                        f"({console.settings.max_upload} bytes)"
                    )
                digest.update(chunk)
                await run_in_threadpool(handle.write, chunk)
        if digest.hexdigest() != x_checksum_sha256:
            raise UsageError(
                f"'{name}' arrived with sha256 {digest.hexdigest()}, "
                f"not the {x_checksum_sha256} the worker claims",
                location=Location(key="X-Checksum-Sha256"),
                hint="the file changed or was cut short on its way; upload it again",
            )
        partial.replace(folder / name)
    finally:
        partial.unlink(missing_ok=True)

    def account() -> None:
        with console.db.session() as session:
            build = builds.get_build(session, build_id)
            build.uploads = {
                **(build.uploads or {}),
                name: {"size": size, "sha256": digest.hexdigest()},
            }
            build.disk_bytes = retention.directory_size(folder)
            build.heartbeat = time.time()
            session.commit()

    await run_in_threadpool(account)
    return {"file": name, "size": size, "sha256": digest.hexdigest()}


class FinishRequest(BaseModel):
    ok: bool
    error: Text | None = None
    step: Short | None = None
    manifest: dict[str, Any] | None = None
    boot_state: Literal["passed", "failed", "none"] | None = None
    boot_detail: Text = ""


@router.post(
    "/worker/builds/{build_id}/finish",
    tags=["workers"],
    responses=errors(409),
    openapi_extra=max_body(REPORT_BODY),
)
def worker_finish(
    build_id: Id, body: FinishRequest, session: SessionDep, console: ConsoleDep, who: WorkerDep
) -> dict[str, Any]:
    """The build's end. A success whose manifest claims artifacts the console did not
    receive with the same size and sha256 fails instead (the reason says which)."""
    build = builds.finish(
        session,
        builds.claimed(session, build_id, who.token_id),
        ok=body.ok,
        error=body.error,
        step=body.step,
        manifest=body.manifest,
        boot_state=body.boot_state,
        boot_detail=body.boot_detail,
    )
    builds.keep_verified(console.settings, build)
    return {"state": build.state}
