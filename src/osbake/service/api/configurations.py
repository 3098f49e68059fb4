"""Configurations: stored recipes with their files, versioned."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from osbake.errors import Location, UsageError
from osbake.service import boot_settings, builds, configs, views
from osbake.service.boot_settings import BootSettings
from osbake.service.deps import (
    CONFIGURATION_BODY,
    LINE,
    MAX_ID,
    PLAIN,
    Builder,
    ConfigName,
    Id,
    SessionDep,
    Text,
    Viewer,
)
from osbake.service.limits import max_body
from osbake.service.models import Configuration, Role, Schedule
from osbake.service.problems import NotFound

router = APIRouter(prefix="/api", tags=["configurations"])


class ConfigurationRequest(BaseModel):
    name: str = Field(max_length=128, pattern=configs.NAME_PATTERN)
    files: dict[str, str] = Field(
        default_factory=dict,
        max_length=configs.MAX_FILES,
        description="path -> text content (recipe, element scripts, ...)",
    )
    files_base64: dict[str, str] = Field(
        default_factory=dict, max_length=configs.MAX_FILES, description="path -> base64 content"
    )
    executable: list[str] = Field(
        default_factory=list, max_length=configs.MAX_FILES, description="paths to mark executable"
    )
    recipe_file: str | None = Field(None, max_length=512, pattern=LINE)
    message: Text = ""
    description: Text = ""
    boot_test: BootSettings | None = Field(
        None, description="how the boot test boots its builds (unchanged when left out)"
    )


@router.get("/configurations")
def list_configurations(session: SessionDep, who: Viewer) -> list[dict[str, Any]]:
    return [
        views.configuration_json(c)
        for c in session.scalars(select(Configuration).order_by(Configuration.name)).all()
    ]


@router.post(
    "/configurations",
    status_code=201,
    openapi_extra=max_body(CONFIGURATION_BODY),
)
def save_configuration(
    body: ConfigurationRequest, session: SessionDep, who: Builder
) -> dict[str, Any]:
    """Create a configuration or store a new version of it (validated first)."""
    files = configs.FileSet()
    for path, text in body.files.items():
        try:
            data = text.encode()
        except UnicodeError:
            raise UsageError(
                "the text is not valid UTF-8 (use files_base64 for binary files)",
                location=Location(key=f"files.{path[:200]}"),
            ) from None
        files.add(path, data, 0o755 if path in body.executable else 0o644)
    for path, encoded in body.files_base64.items():
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise UsageError(
                "this is not base64", location=Location(key=f"files_base64.{path[:200]}")
            ) from None
        files.add(path, raw, 0o755 if path in body.executable else 0o644)
    version, created = configs.save_version(
        session,
        body.name,
        files,
        recipe_file=body.recipe_file,
        message=body.message,
        author=who.name,
        source="api",
        description=body.description,
    )
    if body.boot_test is not None:
        boot_settings.apply(version.configuration, body.boot_test)
    session.commit()
    return {"configuration": body.name, **views.version_json(version), "new_version": created}


@router.post(
    "/configurations/import",
    status_code=201,
    openapi_extra=max_body(CONFIGURATION_BODY),
)
async def import_configuration(
    session: SessionDep,
    who: Builder,
    name: Annotated[str, Form(max_length=128, pattern=configs.NAME_PATTERN)],
    git_url: Annotated[str | None, Form(max_length=2000, pattern=LINE)] = None,
    git_ref: Annotated[str | None, Form(max_length=256, pattern=LINE)] = None,
    subdir: Annotated[str, Form(max_length=1024, pattern=LINE)] = "",
    directory: Annotated[str | None, Form(max_length=4096, pattern=LINE)] = None,
    recipe_file: Annotated[str | None, Form(max_length=512, pattern=LINE)] = None,
    message: Annotated[str, Form(max_length=64 << 10, pattern=PLAIN)] = "",
    archive: Annotated[UploadFile | None, File()] = None,
) -> dict[str, Any]:
    """Import from a tar archive (upload), a git repository, or (admins) a directory on the host."""
    if archive is not None and archive.filename:
        files = await run_in_threadpool(configs.from_upload, archive.file)
        source = f"archive {archive.filename}"
    elif git_url:
        if configs.is_local_git(git_url) and not who.allows(Role.ADMIN):
            raise HTTPException(
                403, "only an admin can import a repository from the console's disk"
            )
        files = await run_in_threadpool(configs.from_git, git_url, git_ref, subdir)
        source = (
            f"git {git_url}" + (f"@{git_ref}" if git_ref else "") + (f" {subdir}" if subdir else "")
        )
    elif directory:
        if not who.allows(Role.ADMIN):
            raise HTTPException(403, "only an admin can import from the console's own disk")
        files = configs.from_directory(Path(directory))
        source = f"directory {directory}"
    else:
        raise UsageError("give an archive, a git_url or a directory to import from")
    version, created = configs.save_version(
        session,
        name,
        files,
        recipe_file=recipe_file,
        message=message or f"import from {source}",
        author=who.name,
        source=source,
    )
    session.commit()
    return {"configuration": name, **views.version_json(version), "new_version": created}


@router.get("/configurations/{name}")
def get_configuration(name: ConfigName, session: SessionDep, who: Viewer) -> dict[str, Any]:
    configuration = builds.get_configuration(session, name)
    data = views.configuration_json(configuration)
    data["versions"] = [views.version_json(v) for v in configuration.versions]
    data["schedules"] = [
        views.schedule_json(s)
        for s in session.scalars(
            select(Schedule).where(Schedule.configuration_id == configuration.id)
        )
    ]
    return data


@router.put("/configurations/{name}/boot-test")
def put_boot_test(
    name: ConfigName, body: BootSettings, session: SessionDep, who: Builder
) -> dict[str, Any]:
    """How the boot test after each build boots the image: the datasource that gives it
    its instance and the hardware it is booted on. Builds take the setting when they are
    requested; their `boot_test` says what they were booted with."""
    configuration = builds.get_configuration(session, name)
    boot_settings.apply(configuration, body)
    session.commit()
    return views.boot_settings_json(configuration)


@router.get("/configurations/{name}/versions/{number}")
def get_version(name: ConfigName, number: Id, session: SessionDep, who: Viewer) -> dict[str, Any]:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    return views.version_json(version, files=True)


@router.get("/configurations/{name}/versions/{number}/files/{path:path}")
def get_file(name: ConfigName, number: Id, path: str, session: SessionDep, who: Viewer) -> Response:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    for item in version.files:
        if item.path == path:
            return Response(item.data, media_type="text/plain; charset=utf-8")
    raise NotFound(f"version {number} of '{name}' has no file '{path}'")


@router.get("/configurations/{name}/versions/{number}/archive")
def get_archive(name: ConfigName, number: Id, session: SessionDep, who: Viewer) -> Response:
    version = builds.get_version(session, builds.get_configuration(session, name), number)
    return Response(
        configs.archive(version),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}-v{number}.tar.gz"'},
    )


@router.get("/configurations/{name}/diff", response_class=PlainTextResponse)
def diff(
    name: ConfigName,
    session: SessionDep,
    who: Viewer,
    a: Annotated[int, Query(ge=1, le=MAX_ID)],
    b: Annotated[int, Query(ge=1, le=MAX_ID)],
) -> str:
    """A unified diff between versions a and b."""
    configuration = builds.get_configuration(session, name)
    return configs.diff(
        builds.get_version(session, configuration, a), builds.get_version(session, configuration, b)
    )
