"""Builds: request, follow, cancel, retry and bless them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from osbake.service import build_diff, builds, configs, retention, views
from osbake.service.deps import (
    LINE,
    MAX_ID,
    Admin,
    Builder,
    ConsoleDep,
    Id,
    SessionDep,
    Short,
    Viewer,
)
from osbake.service.models import Build, BuildState
from osbake.service.problems import errors

router = APIRouter(prefix="/api", tags=["builds"])


class BuildRequest(BaseModel):
    configuration: str = Field(max_length=128, pattern=configs.NAME_PATTERN)
    version: int | None = Field(
        None, ge=1, le=MAX_ID, description="configuration version (default: the latest)"
    )
    variant: Short | None = None
    arch: Short | None = None
    matrix: bool = Field(False, description="build every variant x arch")
    milestone: Short = Field("daily", description="daily, alpha, beta, rc, final or free text")


@router.post("/builds", status_code=201, responses=errors(404))
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


@router.get("/builds", responses=errors(404))
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


@router.get("/builds/{build_id}")
def get_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Viewer
) -> dict[str, Any]:
    """A build: state, steps, queue position, elapsed time; a failed one with its log's tail."""
    build = builds.get_build(session, build_id)
    data = views.build_json(session, build)
    if build.state == BuildState.FAILED:
        data["log_tail"] = builds.failure_tail(console.settings, build)
    return data


@router.post("/builds/{build_id}/cancel", responses=errors(409))
def cancel_build(build_id: Id, session: SessionDep, who: Builder) -> dict[str, Any]:
    build = builds.cancel(session, builds.get_build(session, build_id))
    return views.build_json(session, build)


@router.post("/builds/{build_id}/retry", status_code=201, responses=errors(409))
def retry_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Builder
) -> dict[str, Any]:
    """Queue the same configuration version, variant, arch and milestone again ("rebuild this")."""
    fresh = builds.retry(session, console.queue, builds.get_build(session, build_id), who.name)
    return views.build_json(session, fresh)


@router.post("/builds/{build_id}/bless", responses=errors(409))
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


@router.get("/builds/{build_id}/diff/{other_id}", responses=errors(404, 409))
def diff_builds(build_id: Id, other_id: Id, session: SessionDep, who: Viewer) -> dict[str, Any]:
    """What changed from this build to the other, as `osbake diff --json` says it.

    Packages added, removed and upgraded, elements, kernel, boot, partitions and
    sizes, from the two builds' manifests (409 while either has none).
    """
    return build_diff.build_diff(session, build_id, other_id).to_json()


@router.get("/builds/{build_id}/log", response_class=PlainTextResponse)
def build_log(build_id: Id, session: SessionDep, console: ConsoleDep, who: Viewer) -> str:
    """The build's log as plain text."""
    builds.get_build(session, build_id)
    lines = (builds.render_line(e) for e in builds.read_events(console.settings, build_id))
    return "".join(f"{line}\n" for line in lines if line is not None)


@router.get(
    "/builds/{build_id}/events",
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
