"""The console itself: its version, queue and running builds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

import osbake
from osbake.service import views
from osbake.service.deps import SessionDep, Viewer
from osbake.service.models import Build, BuildState

router = APIRouter(prefix="/api", tags=["console"])


@router.get("/status")
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
