"""Artifacts: download them, find which build made an image or holds a package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from osbake.service import builds, retention, views
from osbake.service.deps import LINE, REPORT_BODY, ArtifactName, ConsoleDep, Id, SessionDep, Viewer
from osbake.service.limits import max_body
from osbake.service.problems import NotFound, errors

router = APIRouter(prefix="/api", tags=["artifacts"])


@router.get("/builds/{build_id}/manifest")
def build_manifest(build_id: Id, session: SessionDep, who: Viewer) -> dict[str, Any]:
    build = builds.get_build(session, build_id)
    if build.manifest is None:
        raise NotFound(f"build {build_id} has no manifest (it did not succeed)")
    return build.manifest


ARTIFACT_URL = "/builds/{build_id}/artifacts/{file}"
ARTIFACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}, "text/plain": {}}}
}


@router.get(
    ARTIFACT_URL,
    response_class=FileResponse,
    responses=ARTIFACT_RESPONSES,
    operation_id="download_artifact",
)
@router.head(
    ARTIFACT_URL,
    response_class=FileResponse,
    responses=ARTIFACT_RESPONSES,
    operation_id="artifact_head",
)
async def download(
    build_id: Id, file: ArtifactName, request: Request, console: ConsoleDep, who: Viewer
) -> Response:
    """Download an artifact (HTTP range requests resume; HEAD tells its size).

    Its sha256 is in X-Checksum-Sha256, and at FILE.sha256. Only the build's
    verified artifacts and its manifest are served.
    """

    def find() -> tuple[str, Path]:
        with console.db.session() as session:
            build = builds.get_build(session, build_id)
            if build.purged:
                raise NotFound(
                    f"the artifacts of build {build_id} were removed by retention",
                    hint="rebuild it (its configuration version is kept)",
                )
            folder = builds.artifact_dir(console.settings, build_id)
            listed = {a.file: a.sha256 for a in build.artifacts}
            if build.manifest is not None:
                listed.setdefault(f"{build.manifest.get('image')}.manifest.json", "")
            base = file.removesuffix(".sha256")
            if file.endswith(".sha256") and listed.get(base):
                return f"{listed[base]}  {base}\n", folder
            if file in listed:
                path = folder / file
                if not path.is_file():
                    raise NotFound(
                        f"the file '{file}' of build {build_id} is missing on the console's disk",
                        hint="rebuild it, and tell the console's admin",
                    )
                return listed[file], path
        raise NotFound(f"build {build_id} has no artifact '{file}'")

    digest, path = await run_in_threadpool(find)
    if file.endswith(".sha256") and path.is_dir():
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


BUILD_SUMMARY = (
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


@router.get("/search/packages")
def search_packages(
    session: SessionDep,
    who: Viewer,
    name: Annotated[str, Query(min_length=1, max_length=256, pattern=LINE)],
    version: Annotated[str | None, Query(max_length=256, pattern=LINE)] = None,
) -> list[dict[str, Any]]:
    """Which images contain package NAME (at VERSION)?"""
    return [
        {
            "package": p.name,
            "version": p.version,
            "arch": p.arch,
            "build": {k: v for k, v in views.build_json(session, b).items() if k in BUILD_SUMMARY},
        }
        for b, p in builds.search_packages(session, name, version)
    ]


class LookupRequest(BaseModel):
    sha256: str | None = Field(None, pattern=r"^\s*[0-9a-fA-F]{64}\s*$")
    manifest: dict[str, Any] | None = None


@router.post("/lookup", responses=errors(404), openapi_extra=max_body(REPORT_BODY))
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
