"""What changed between two builds of the console: osbake diff over their stored manifests."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from osbake.diff import Diff, Side, diff
from osbake.service.builds import get_build, parse_manifest
from osbake.service.models import Build, BuildState
from osbake.service.problems import Conflict


def label(build: Build) -> str:
    """How a build is named on either side of the diff."""
    where = f"{build.variant or '(base)'}/{build.arch}"
    return f"build {build.id} ({build.configuration.name} v{build.version.number} {where})"


def _side(build: Build) -> Side:
    if build.manifest is None:
        raise Conflict(
            f"build {build.id} has no manifest (it is {build.state}; "
            "only a succeeded build has one)",
            hint="compare two succeeded builds; GET /api/builds?state=succeeded lists them",
        )
    return Side(label(build), parse_manifest(build.manifest))


def build_diff(session: Session, old_id: int, new_id: int) -> Diff:
    """The diff from build old_id to build new_id (404: no such build, 409: no manifest)."""
    old, new = get_build(session, old_id), get_build(session, new_id)
    return diff(_side(old), _side(new))


def previous_build(session: Session, build: Build) -> Build | None:
    """The last succeeded build of the same configuration, variant and arch before this one."""
    earlier = session.scalars(
        select(Build)
        .where(
            Build.configuration_id == build.configuration_id,
            Build.variant.is_(None) if build.variant is None else Build.variant == build.variant,
            Build.arch == build.arch,
            Build.id < build.id,
            Build.state == BuildState.SUCCEEDED,
        )
        .order_by(Build.id.desc())
        .limit(20)
    )
    # a JSON column may hold JSON null rather than SQL NULL: look at the value
    return next((b for b in earlier if b.manifest is not None), None)
