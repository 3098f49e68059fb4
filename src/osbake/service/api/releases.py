"""Releases: unblessing, the signing key, push targets, publications and release jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from osbake.service import builds, releases, retention, signing_key, views
from osbake.service.deps import LINE, Admin, ConfigName, ConsoleDep, Id, SessionDep, Viewer
from osbake.service.models import ReleaseJob
from osbake.service.problems import NotFound, errors

router = APIRouter(prefix="/api", tags=["releases"])

TargetSpec = Annotated[str, Field(max_length=1024, pattern=LINE)]


class PushTargets(BaseModel):
    targets: list[TargetSpec] = Field(
        max_length=32,
        description="glance:CLOUD (clouds.yaml on the console's host), ec2:REGION[,REGION...] "
        "(credentials as boto3 finds them) or dir:/PATH (a mirror folder)",
    )


@router.post("/builds/{build_id}/unbless", responses=errors(409))
def unbless_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Admin
) -> dict[str, Any]:
    """Take a blessing back: the build leaves the published streams at the next publish."""
    build = retention.unbless(
        session,
        console.settings,
        builds.get_build(session, build_id),
        who.name,
        console.bless_hooks,
    )
    return views.build_json(session, build)


@router.get("/signing-key")
async def signing_key_info(console: ConsoleDep, who: Viewer) -> dict[str, Any]:
    """The fingerprint of the key that signs the console's streams, and its public keyring."""
    fingerprint = await run_in_threadpool(signing_key.fingerprint, console.settings)
    return {
        "fingerprint": fingerprint,
        "keyring": "/keyring.gpg",
        "index": "/streams/v1/index.sjson",
    }


@router.post("/publish", status_code=202)
def publish_now(session: SessionDep, who: Admin) -> dict[str, Any]:
    """Write the streams again now (blessing and unblessing do it anyway)."""
    job = releases.request_publish(session, f"asked by {who.name}")
    return views.job_json(job)


@router.get("/configurations/{name}/releases")
def configuration_releases(name: ConfigName, session: SessionDep, who: Viewer) -> dict[str, Any]:
    """What the configuration published when, in which channel, and where it was pushed."""
    configuration = builds.get_configuration(session, name)
    return views.release_json(session, configuration.id)


@router.put("/configurations/{name}/push-targets", responses=errors(422))
def set_push_targets(
    name: ConfigName, body: PushTargets, session: SessionDep, who: Admin
) -> dict[str, Any]:
    """Where the configuration's published builds are pushed after each publish (admins:
    a mirror folder is a folder of the console's host)."""
    configuration = builds.get_configuration(session, name)
    targets = releases.set_push_targets(session, configuration.id, body.targets, who.name)
    return {"push_targets": [t.spec for t in targets]}


@router.get("/release-jobs/{job_id}")
def release_job(job_id: Id, session: SessionDep, who: Viewer) -> dict[str, Any]:
    job = session.get(ReleaseJob, job_id)
    if job is None:
        raise NotFound(f"no release job {job_id}")
    return views.job_json(job)


@router.get("/release-jobs/{job_id}/log", response_class=PlainTextResponse)
def release_job_log(job_id: Id, session: SessionDep, console: ConsoleDep, who: Viewer) -> str:
    """The job's log so far (every attempt), as plain text."""
    if session.get(ReleaseJob, job_id) is None:
        raise NotFound(f"no release job {job_id}")
    lines = (builds.render_line(e) for e in releases.read_job_events(console.settings, job_id))
    return "".join(f"{line}\n" for line in lines if line is not None)
