"""Schedules: builds queued by cron."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from osbake.service import builds, schedules, views
from osbake.service.deps import LINE, Builder, ConfigName, Id, SessionDep, Short, Viewer
from osbake.service.models import Schedule
from osbake.service.problems import NotFound

router = APIRouter(prefix="/api", tags=["schedules"])


class ScheduleRequest(BaseModel):
    cron: str = Field(
        max_length=128, pattern=LINE, description="five-field cron (UTC) or @nightly / @weekly"
    )
    milestone: Short = "daily"
    variant: Short | None = None
    arch: Short | None = None
    matrix: bool = True


@router.post("/configurations/{name}/schedules", status_code=201)
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


@router.get("/schedules")
def list_schedules(session: SessionDep, who: Viewer) -> list[dict[str, Any]]:
    return [views.schedule_json(s) for s in session.scalars(select(Schedule).order_by(Schedule.id))]


@router.delete("/schedules/{schedule_id}", status_code=204)
def delete_schedule(schedule_id: Id, session: SessionDep, who: Builder) -> Response:
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        raise NotFound(f"there is no schedule {schedule_id}")
    schedules.delete(session, schedule)
    return Response(status_code=204)
