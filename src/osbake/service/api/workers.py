"""The routes workers call: claim a build, fetch its configuration, report on it.

Only worker tokens call these, and after the claim only the token that claimed a
build may report on it (409 for any other).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import Response
from pydantic import BaseModel, StringConstraints
from starlette.concurrency import run_in_threadpool

import osbake
from osbake.errors import Location, UsageError
from osbake.service import builds, configs, retention
from osbake.service.deps import (
    REPORT_BODY,
    ArtifactName,
    ConsoleDep,
    Id,
    SessionDep,
    Short,
    Text,
    WorkerDep,
)
from osbake.service.limits import max_body
from osbake.service.models import BuildState
from osbake.service.problems import Conflict, TooLarge, errors

router = APIRouter(prefix="/api", tags=["workers"])


@router.get("/worker/hello")
def worker_hello(console: ConsoleDep, who: WorkerDep) -> dict[str, Any]:
    """What a worker needs: the queue to take builds from."""
    return {"osbake": osbake.__version__, "queue": console.settings.queue_url}


class ClaimRequest(BaseModel):
    worker: Short


@router.post("/worker/builds/{build_id}/claim", responses=errors(409))
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
        "boot": {"datasource": build.boot_datasource, "hardware": build.boot_hardware},
    }


@router.get(
    "/worker/builds/{build_id}/config.tar.gz",
    responses={**errors(409), 200: {"content": {"application/gzip": {}}}},
)
def worker_configuration(build_id: Id, session: SessionDep, who: WorkerDep) -> Response:
    build = builds.claimed(session, build_id, who.token_id)
    return Response(configs.archive(build.version), media_type="application/gzip")


@router.post(
    "/worker/builds/{build_id}/events",
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
