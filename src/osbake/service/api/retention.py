"""Disk use and retention of the artifacts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from osbake.service import retention
from osbake.service.deps import Admin, ConsoleDep, SessionDep, Viewer

router = APIRouter(prefix="/api", tags=["retention"])


@router.get("/disk")
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


@router.post("/gc")
def collect(session: SessionDep, console: ConsoleDep, who: Admin) -> dict[str, Any]:
    """Free the artifacts of every build retention does not keep (the console does it anyway)."""
    result = retention.collect(session, console.settings, console.in_use)
    return {
        "purged": result.purged,
        "freed_bytes": result.freed,
        "over_budget_bytes": result.over_budget,
    }
