"""The REST API (/api): everything the web page can do, for scripts and workers.

Routes are thin: they check who asks, parse the request and call the services
in configs, builds, schedules and retention.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

import osbake
from osbake.errors import UsageError
from osbake.service import auth, builds, configs, retention, schedules, views
from osbake.service.app import Admin, Builder, ConsoleDep, SessionDep, Viewer, WorkerDep
from osbake.service.models import Build, BuildState, Configuration, Role, Schedule, Token, User

router = APIRouter(prefix="/api")


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
    name: str = Field("token", max_length=128)
    role: Literal["viewer", "builder", "admin", "worker"] = "viewer"


@router.post("/tokens", tags=["access"], status_code=201)
def create_token(body: TokenRequest, session: SessionDep, who: Viewer) -> dict[str, Any]:
    """Make an API token (the secret is shown once). Only admins make worker or admin tokens."""
    role = Role(body.role)
    if role in (Role.WORKER, Role.ADMIN) and not who.allows(Role.ADMIN):
        raise HTTPException(403, f"only an admin can make a {role} token")
    user = session.get(User, who.user_id) if who.user_id else None
    token, secret = auth.create_token(session, body.name, role, user)
    session.commit()
    return {"id": token.id, "name": token.name, "role": token.role, "token": secret}


@router.get("/tokens", tags=["access"])
def list_tokens(session: SessionDep, who: Admin) -> list[dict[str, Any]]:
    return [
        {
            "id": t.id,
            "name": t.name,
            "role": t.role,
            "created": views.iso(t.created),
            "last_used": views.iso(t.last_used),
        }
        for t in session.scalars(select(Token).order_by(Token.id)).all()
    ]


@router.delete("/tokens/{token_id}", tags=["access"], status_code=204)
def revoke_token(token_id: int, session: SessionDep, who: Admin) -> Response:
    token = session.get(Token, token_id)
    if token is None:
        raise builds.NotFound(f"there is no token {token_id}")
    session.delete(token)
    session.commit()
    return Response(status_code=204)


class UserRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8)
    role: Literal["viewer", "builder", "admin"] = "viewer"


@router.post("/users", tags=["access"], status_code=201)
def create_user(body: UserRequest, session: SessionDep, who: Admin) -> dict[str, Any]:
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
    name: str
    files: dict[str, str] = Field(
        default_factory=dict, description="path -> text content (recipe, element scripts, ...)"
    )
    files_base64: dict[str, str] = Field(default_factory=dict, description="path -> base64 content")
    executable: list[str] = Field(default_factory=list, description="paths to mark executable")
    recipe_file: str | None = None
    message: str = ""
    description: str = ""


@router.get("/configurations", tags=["configurations"])
def list_configurations(session: SessionDep, who: Viewer) -> list[dict[str, Any]]:
    return [
        views.configuration_json(c)
        for c in session.scalars(select(Configuration).order_by(Configuration.name)).all()
    ]


@router.post("/configurations", tags=["configurations"], status_code=201)
def save_configuration(
    body: ConfigurationRequest, session: SessionDep, who: Builder
) -> dict[str, Any]:
    """Create a configuration or store a new version of it (validated first)."""
    files = configs.FileSet()
    for path, text in body.files.items():
        files.add(path, text.encode(), 0o755 if path in body.executable else 0o644)
    for path, data in body.files_base64.items():
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise UsageError(f"files_base64['{path}'] is not base64") from None
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


@router.post("/configurations/import", tags=["configurations"], status_code=201)
async def import_configuration(
    session: SessionDep,
    who: Builder,
    name: Annotated[str, Form()],
    git_url: Annotated[str | None, Form()] = None,
    git_ref: Annotated[str | None, Form()] = None,
    subdir: Annotated[str, Form()] = "",
    directory: Annotated[str | None, Form()] = None,
    recipe_file: Annotated[str | None, Form()] = None,
    message: Annotated[str, Form()] = "",
    archive: Annotated[UploadFile | None, File()] = None,
) -> dict[str, Any]:
    """Import from a tar archive (upload), a git repository, or (admins) a directory on the host."""
    if archive is not None and archive.filename:
        files = configs.from_archive(await archive.read())
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
def get_configuration(name: str, session: SessionDep, who: Viewer) -> dict[str, Any]:
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
def get_version(name: str, number: int, session: SessionDep, who: Viewer) -> dict[str, Any]:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    return views.version_json(version, files=True)


@router.get("/configurations/{name}/versions/{number}/files/{path:path}", tags=["configurations"])
def get_file(name: str, number: int, path: str, session: SessionDep, who: Viewer) -> Response:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    for item in version.files:
        if item.path == path:
            return Response(item.data, media_type="text/plain; charset=utf-8")
    raise builds.NotFound(f"version {number} of '{name}' has no file '{path}'")


@router.get("/configurations/{name}/versions/{number}/archive", tags=["configurations"])
def get_archive(name: str, number: int, session: SessionDep, who: Viewer) -> Response:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    return Response(
        configs.archive(version),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}-v{number}.tar.gz"'},
    )


@router.get(
    "/configurations/{name}/diff", tags=["configurations"], response_class=PlainTextResponse
)
def diff(name: str, session: SessionDep, who: Viewer, a: int, b: int) -> str:
    """A unified diff between versions a and b."""
    configuration = builds.get_configuration(session, name)
    return configs.diff(
        builds.get_version(session, configuration, a), builds.get_version(session, configuration, b)
    )


# -- schedules -----------------------------------------------------------------------------


class ScheduleRequest(BaseModel):
    cron: str = Field(description="five-field cron (UTC) or @nightly / @weekly")
    milestone: str = "daily"
    variant: str | None = None
    arch: str | None = None
    matrix: bool = True


@router.post("/configurations/{name}/schedules", tags=["schedules"], status_code=201)
def create_schedule(
    name: str, body: ScheduleRequest, session: SessionDep, who: Builder
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
def delete_schedule(schedule_id: int, session: SessionDep, who: Builder) -> Response:
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        raise builds.NotFound(f"there is no schedule {schedule_id}")
    schedules.delete(session, schedule)
    return Response(status_code=204)


# -- builds --------------------------------------------------------------------------------


class BuildRequest(BaseModel):
    configuration: str
    version: int | None = Field(None, description="configuration version (default: the latest)")
    variant: str | None = None
    arch: str | None = None
    matrix: bool = Field(False, description="build every variant x arch")
    milestone: str = Field("daily", description="daily, alpha, beta, rc, final or free text")


@router.post("/builds", tags=["builds"], status_code=201)
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


@router.get("/builds", tags=["builds"])
def list_builds(
    session: SessionDep,
    who: Viewer,
    state: str | None = None,
    configuration: str | None = None,
    milestone: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    query = select(Build).order_by(Build.id.desc()).limit(min(max(limit, 1), 500))
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
    build_id: int, session: SessionDep, console: ConsoleDep, who: Viewer
) -> dict[str, Any]:
    """A build: state, steps, queue position, elapsed time; a failed one with its log's tail."""
    build = builds.get_build(session, build_id)
    data = views.build_json(session, build)
    if build.state == BuildState.FAILED:
        data["log_tail"] = builds.failure_tail(console.settings, build)
    return data


@router.post("/builds/{build_id}/cancel", tags=["builds"])
def cancel_build(build_id: int, session: SessionDep, who: Builder) -> dict[str, Any]:
    build = builds.cancel(session, builds.get_build(session, build_id))
    return views.build_json(session, build)


@router.post("/builds/{build_id}/retry", tags=["builds"], status_code=201)
def retry_build(
    build_id: int, session: SessionDep, console: ConsoleDep, who: Builder
) -> dict[str, Any]:
    """Queue the same configuration version, variant, arch and milestone again ("rebuild this")."""
    fresh = builds.retry(session, console.queue, builds.get_build(session, build_id), who.name)
    return views.build_json(session, fresh)


@router.post("/builds/{build_id}/bless", tags=["builds"])
def bless_build(
    build_id: int, session: SessionDep, console: ConsoleDep, who: Admin
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
def build_log(build_id: int, session: SessionDep, console: ConsoleDep, who: Viewer) -> str:
    """The build's log as plain text."""
    builds.get_build(session, build_id)
    lines = (builds.render_line(e) for e in builds.read_events(console.settings, build_id))
    return "".join(f"{line}\n" for line in lines if line is not None)


@router.get("/builds/{build_id}/events", tags=["builds"])
async def build_events(
    build_id: int, request: Request, console: ConsoleDep, who: Viewer, after: int = -1
) -> StreamingResponse:
    """Server-sent events: the build's events as they happen, then `state` updates.

    Each event's id is its sequence number; reconnecting with Last-Event-ID (or
    ?after=N) resumes after it. The stream ends when the build has finished.
    """
    last = request.headers.get("last-event-id")
    start = int(last) + 1 if last and last.isdigit() else after + 1

    def snapshot() -> dict[str, Any]:
        with console.db.session() as session:
            return views.build_json(session, builds.get_build(session, build_id))

    await run_in_threadpool(snapshot)  # 404 before the stream starts

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
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/builds/{build_id}/manifest", tags=["artifacts"])
def build_manifest(build_id: int, session: SessionDep, who: Viewer) -> dict[str, Any]:
    build = builds.get_build(session, build_id)
    if build.manifest is None:
        raise builds.NotFound(f"build {build_id} has no manifest (it did not succeed)")
    return build.manifest


@router.get("/builds/{build_id}/artifacts/{file}", tags=["artifacts"])
async def download(
    build_id: int, file: str, request: Request, console: ConsoleDep, who: Viewer
) -> Response:
    """Download an artifact (HTTP range requests resume); its sha256 is in X-Checksum-Sha256."""

    def find() -> tuple[str, Path]:
        with console.db.session() as session:
            build = builds.get_build(session, build_id)
            if build.purged:
                raise builds.NotFound(
                    f"the artifacts of build {build_id} were removed by retention",
                    hint="rebuild it (its configuration version is kept)",
                )
            if file.endswith(".sha256"):
                base = file.removesuffix(".sha256")
                for artifact in build.artifacts:
                    if artifact.file == base:
                        return f"{artifact.sha256}  {artifact.file}\n", builds.artifact_dir(
                            console.settings, build_id
                        )
            for artifact in build.artifacts:
                if artifact.file == file:
                    return artifact.sha256, builds.artifact_dir(console.settings, build_id) / file
            manifest = builds.artifact_dir(console.settings, build_id) / file
            if file.endswith(".manifest.json") and manifest.is_file():
                return "", manifest
        raise builds.NotFound(f"build {build_id} has no artifact '{file}'")

    digest, path = await run_in_threadpool(find)
    if file.endswith(".sha256"):
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


@router.get("/search/packages", tags=["artifacts"])
def search_packages(
    session: SessionDep, who: Viewer, name: str, version: str | None = None
) -> list[dict[str, Any]]:
    """Which images contain package NAME (at VERSION)?"""
    return [
        {
            "package": p.name,
            "version": p.version,
            "arch": p.arch,
            "build": {
                k: v
                for k, v in views.build_json(session, b).items()
                if k
                in (
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
            },
        }
        for b, p in builds.search_packages(session, name, version)
    ]


class LookupRequest(BaseModel):
    sha256: str | None = None
    manifest: dict[str, Any] | None = None


@router.post("/lookup", tags=["artifacts"])
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


@router.get("/worker/hello", tags=["workers"])
def worker_hello(console: ConsoleDep, who: WorkerDep) -> dict[str, Any]:
    """What a worker needs: the queue to take builds from."""
    return {"osbake": osbake.__version__, "queue": console.settings.queue_url}


class ClaimRequest(BaseModel):
    worker: str


@router.post("/worker/builds/{build_id}/claim", tags=["workers"])
def worker_claim(
    build_id: int, body: ClaimRequest, session: SessionDep, who: WorkerDep
) -> dict[str, Any]:
    build = builds.claim(session, build_id, body.worker)
    return {
        "id": build.id,
        "recipe_file": build.version.recipe_file,
        "variant": build.variant,
        "arch": build.arch,
        "configuration": build.configuration.name,
        "version": build.version.number,
    }


@router.get("/worker/builds/{build_id}/config.tar.gz", tags=["workers"])
def worker_configuration(build_id: int, session: SessionDep, who: WorkerDep) -> Response:
    build = builds.get_build(session, build_id)
    return Response(configs.archive(build.version), media_type="application/gzip")


@router.post("/worker/builds/{build_id}/events", tags=["workers"])
def worker_events(
    build_id: int,
    events: list[dict[str, Any]],
    session: SessionDep,
    console: ConsoleDep,
    who: WorkerDep,
) -> dict[str, Any]:
    """A batch of the build's events (also the worker's heartbeat); answers whether to cancel."""
    build = builds.get_build(session, build_id)
    return {"cancel": builds.record_events(session, console.settings, build, events)}


@router.put("/worker/builds/{build_id}/files/{file}", tags=["workers"], status_code=201)
async def worker_upload(
    build_id: int, file: str, request: Request, console: ConsoleDep, who: WorkerDep
) -> dict[str, Any]:
    def check() -> None:
        with console.db.session() as session:
            build = builds.get_build(session, build_id)
            if build.state != BuildState.RUNNING:
                raise builds.Conflict(f"build {build_id} is {build.state}, not running")

    await run_in_threadpool(check)
    name = configs.safe_path(file)
    if "/" in name or name.startswith("."):
        raise UsageError(f"'{file}' is not an artifact file name")
    folder = builds.artifact_dir(console.settings, build_id)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.partial"
    size = 0
    with partial.open("wb") as handle:
        async for chunk in request.stream():
            handle.write(chunk)
            size += len(chunk)
    partial.replace(folder / name)

    def account() -> None:
        with console.db.session() as session:
            build = builds.get_build(session, build_id)
            build.disk_bytes = retention.directory_size(folder)
            build.heartbeat = time.time()
            session.commit()

    await run_in_threadpool(account)
    return {"file": name, "size": size}


class FinishRequest(BaseModel):
    ok: bool
    error: str | None = None
    step: str | None = None
    manifest: dict[str, Any] | None = None
    boot_state: Literal["passed", "failed", "none"] | None = None
    boot_detail: str = ""


@router.post("/worker/builds/{build_id}/finish", tags=["workers"])
def worker_finish(
    build_id: int, body: FinishRequest, session: SessionDep, who: WorkerDep
) -> dict[str, Any]:
    build = builds.finish(
        session,
        builds.get_build(session, build_id),
        ok=body.ok,
        error=body.error,
        step=body.step,
        manifest=body.manifest,
        boot_state=body.boot_state,
        boot_detail=body.boot_detail,
    )
    return {"state": build.state}
