"""How builds, configurations and schedules look in JSON and on the page."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from osbake.service import builds as builds_mod
from osbake.service import releases
from osbake.service.models import (
    Build,
    Configuration,
    ConfigVersion,
    Publication,
    ReleaseJob,
    ReleaseJobBuild,
    Schedule,
)


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def build_json(session: Session, build: Build) -> dict[str, Any]:
    elapsed = builds_mod.elapsed(build)
    return {
        "id": build.id,
        "configuration": build.configuration.name,
        "version": build.version.number,
        "variant": build.variant,
        "arch": build.arch,
        "milestone": build.milestone,
        "state": build.state,
        "reason": build.reason,
        "failed_step": build.failed_step,
        "current_step": build.current_step,
        "steps": build.steps or [],
        "queue_position": builds_mod.queue_position(session, build),
        "elapsed_seconds": round(elapsed, 1) if elapsed is not None else None,
        "requested_by": build.requested_by,
        "retry_of": build.retry_of,
        "schedule_id": build.schedule_id,
        "worker": build.worker,
        "created": iso(build.created),
        "started": iso(build.started),
        "finished": iso(build.finished),
        "cancel_requested": build.cancel_requested,
        "image": build.image,
        "recipe_sha256": build.recipe_sha256,
        "boot_test": {
            "state": build.boot_state,
            "detail": build.boot_detail,
            "datasource": build.boot_datasource,
            "hardware": build.boot_hardware,
        },
        "blessed": build.blessed,
        "blessed_by": build.blessed_by,
        "purged": build.purged,
        "disk_bytes": build.disk_bytes,
        "artifacts": [
            {
                "file": a.file,
                "format": a.format,
                "size": a.size,
                "sha256": a.sha256,
                "url": f"/api/builds/{build.id}/artifacts/{a.file}",
            }
            for a in build.artifacts
        ],
        "release": build_release_json(session, build.id),
    }


def version_json(version: ConfigVersion, *, files: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "number": version.number,
        "recipe_file": version.recipe_file,
        "message": version.message,
        "author": version.author,
        "source": version.source,
        "digest": version.digest,
        "targets": [{"variant": t[0], "arch": t[1]} for t in version.targets],
        "created": iso(version.created),
    }
    if files:
        data["files"] = [
            {"path": f.path, "mode": f"{f.mode:o}", "size": len(f.data)} for f in version.files
        ]
    return data


def configuration_json(configuration: Configuration) -> dict[str, Any]:
    latest = configuration.versions[-1] if configuration.versions else None
    return {
        "name": configuration.name,
        "description": configuration.description,
        "created": iso(configuration.created),
        "versions": len(configuration.versions),
        "latest": version_json(latest) if latest else None,
        "boot_test": boot_settings_json(configuration),
    }


def boot_settings_json(configuration: Configuration) -> dict[str, Any]:
    return {
        "datasource": configuration.boot_datasource,
        "hardware": configuration.boot_hardware,
    }


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "configuration": schedule.configuration.name,
        "cron": schedule.cron,
        "milestone": schedule.milestone,
        "variant": schedule.variant,
        "arch": schedule.arch,
        "matrix": schedule.matrix,
        "enabled": schedule.enabled,
        "next_run": iso(schedule.next_run),
        "last_run": iso(schedule.last_run),
    }


def human_size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"


FILTERS = {"size": human_size, "when": when, "duration": duration, "iso": iso}


# -- releases ------------------------------------------------------------------------------


def publication_json(row: Publication) -> dict[str, Any]:
    return {
        "build": row.build_id,
        "channel": row.channel,
        "label": row.label,
        "content_id": row.content_id,
        "product": row.product,
        "version": row.version,
        "published": iso(row.published),
        "removed": iso(row.removed),
        "stream": f"/streams/v1/{row.content_id}.json",
        "files": [
            f"/{p}" for p in row.paths if isinstance(p, str) and p.startswith(releases.FILES_DIR)
        ],
    }


def job_json(job: ReleaseJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "build": job.build_id,
        "builds": job.build_ids,
        "target": job.target or None,
        "reason": job.reason,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error or None,
        "result": job.result,
        "created": iso(job.created),
        "started": iso(job.started),
        "finished": iso(job.finished),
        "log": f"/api/release-jobs/{job.id}/log",
    }


def release_json(session: Session, configuration_id: int) -> dict[str, Any]:
    """What a configuration published when, in which channel, and where it was pushed."""
    rows = session.scalars(
        select(Publication)
        .where(Publication.configuration_id == configuration_id)
        .order_by(Publication.id.desc())
    ).all()
    jobs = session.scalars(
        select(ReleaseJob)
        .where(ReleaseJob.configuration_id == configuration_id)
        .order_by(ReleaseJob.id.desc())
        .limit(200)
    ).all()
    return {
        "publications": [publication_json(r) for r in rows],
        "pushes": [job_json(j) for j in jobs],
        "push_targets": [t.spec for t in releases.push_targets(session, configuration_id)],
    }


def build_release_json(session: Session, build_id: int) -> dict[str, Any]:
    """A build's publications and release jobs (the build's page shows them): the jobs
    it asked for first, and the publish jobs asked for by others that served it too."""
    rows = session.scalars(
        select(Publication).where(Publication.build_id == build_id).order_by(Publication.id)
    ).all()
    served = select(ReleaseJobBuild.job_id).where(ReleaseJobBuild.build_id == build_id)
    jobs = session.scalars(
        select(ReleaseJob)
        .where(or_(ReleaseJob.build_id == build_id, ReleaseJob.id.in_(served)))
        .order_by(ReleaseJob.id)
    ).all()
    return {
        "publications": [publication_json(r) for r in rows],
        "jobs": [job_json(j) for j in jobs],
    }
