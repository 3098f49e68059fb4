"""Schedules: cron expressions per configuration that queue builds when due."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.orm import Session

from osbake.errors import Location, UsageError
from osbake.service import builds as builds_mod
from osbake.service.models import Build, Configuration, Schedule, now
from osbake.service.queue import BuildQueue

ALIASES = {
    "@nightly": "0 2 * * *",
    "@daily": "0 2 * * *",
    "@weekly": "0 3 * * 0",
    "@hourly": "0 * * * *",
}


def check_cron(expression: str) -> str:
    expression = ALIASES.get(expression.strip(), expression.strip())
    if not croniter.is_valid(expression):
        raise UsageError(
            f"'{expression}' is not a cron expression",
            location=Location(key="cron"),
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *' "
            "(nightly at 02:00 UTC), or @nightly / @weekly",
        )
    return expression


def next_run(expression: str, after: float) -> float:
    base = datetime.fromtimestamp(after, UTC)
    return float(croniter(expression, base).get_next(float))


def create(
    session: Session,
    configuration: Configuration,
    cron: str,
    *,
    milestone: str = "daily",
    variant: str | None = None,
    arch: str | None = None,
    matrix: bool = True,
) -> Schedule:
    expression = check_cron(cron)
    schedule = Schedule(
        configuration_id=configuration.id,
        cron=expression,
        milestone=builds_mod.check_milestone(milestone),
        variant=variant or None,
        arch=arch or None,
        matrix=matrix,
        enabled=True,
        next_run=next_run(expression, now()),
    )
    session.add(schedule)
    session.commit()
    return schedule


def fire_due(session: Session, queue: BuildQueue, at: float | None = None) -> list[Build]:
    """Queue the builds of every schedule that is due; each fires once per due time."""
    moment = at if at is not None else now()
    due = session.scalars(
        select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run <= moment)
    ).all()
    started: list[Build] = []
    for schedule in due:
        schedule.last_run = moment
        schedule.next_run = next_run(schedule.cron, moment)
        session.commit()
        version = builds_mod.get_version(session, schedule.configuration, None)
        started += builds_mod.request_builds(
            session,
            queue,
            version,
            variant=schedule.variant,
            arch=schedule.arch,
            matrix=schedule.matrix,
            milestone=schedule.milestone,
            requested_by=f"schedule {schedule.id}",
            schedule_id=schedule.id,
        )
    return started


def delete(session: Session, schedule: Schedule) -> None:
    """Remove a schedule; the builds it queued stay (without the link)."""
    for build in session.scalars(select(Build).where(Build.schedule_id == schedule.id)):
        build.schedule_id = None
    session.flush()
    session.delete(schedule)
    session.commit()
