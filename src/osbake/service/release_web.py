"""What the console publishes, for everyone, and its release pages.

Anonymous and read-only: the streams (`/streams/v1/...`), the published files
beside them (`/images/...`) and the public keyring (`/keyring.gpg`), so that
`sstream-query` and `osbake sync` need no token. Only files inside the
console's tree are served: no path leaves it, hidden files (partial writes,
the lock) are never shown, and links are not followed.
A configuration's release page (`/configurations/NAME/releases`) needs a viewer.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from osbake.publish.streams import STREAMS_DIR
from osbake.service import builds, releases, retention, signing_key, views
from osbake.service.deps import (
    Admin,
    ConfigName,
    ConsoleDep,
    Id,
    SessionDep,
    Viewer,
    csrf_token,
)
from osbake.service.models import Role
from osbake.service.problems import NotFound

router = APIRouter(include_in_schema=False)

STREAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,250}\.s?json$"
SEGMENT = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._:+-]{0,254}")
MAX_PATH = 2000
# The published files' types (the rest is application/octet-stream).
TYPES = {
    ".json": "application/json",
    ".sjson": "text/plain; charset=utf-8",  # a clearsigned JSON document
    ".html": "text/html; charset=utf-8",
    ".qcow2": "application/x-qemu-disk",
    ".xz": "application/x-xz",
    ".gz": "application/gzip",
    ".zst": "application/zstd",
    ".tar": "application/x-tar",
}
TEXT_NAMES = {"README", "SHA256SUMS"}


def media_type(name: str) -> str:
    if name in TEXT_NAMES or name.endswith(".sha256"):
        return "text/plain; charset=utf-8"
    return TYPES.get(Path(name).suffix, "application/octet-stream")


def _confined(root: Path, relative: str) -> Path:
    """The file `relative` under `root`, opened without following links; else NotFound."""
    parts = relative.split("/")
    if (
        len(relative) > MAX_PATH
        or not relative
        or not all(SEGMENT.fullmatch(p) for p in parts)
        or any(p in (".", "..") for p in parts)
    ):
        raise NotFound("no such published file")
    # Walk component by component with O_NOFOLLOW: a link in the tree leads nowhere.
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise NotFound("nothing is published yet") from None
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                raise NotFound("no such published file") from None
            os.close(fd)
            fd = nxt
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            raise NotFound("no such published file") from None
        if not stat.S_ISREG(info.st_mode):
            raise NotFound("no such published file")
    finally:
        os.close(fd)
    return root.joinpath(*parts)


def _file(root: Path, relative: str) -> Response:
    path = _confined(root, relative)
    return FileResponse(path, media_type=media_type(path.name))


@router.api_route("/streams/v1/{name}", methods=["GET", "HEAD"])
async def stream_file(
    name: Annotated[str, PathParam(max_length=256, pattern=STREAM_NAME)], console: ConsoleDep
) -> Response:
    """A stream file of the console's tree (index and products, .json and signed .sjson)."""
    tree = releases.tree_dir(console.settings)
    return await run_in_threadpool(_file, tree / STREAMS_DIR, name)


@router.api_route("/images/{path:path}", methods=["GET", "HEAD"])
async def published_file(path: str, console: ConsoleDep) -> Response:
    """A published file (image, manifest, README, SHA256SUMS); range requests work."""
    tree = releases.tree_dir(console.settings)
    return await run_in_threadpool(_file, tree / releases.FILES_DIR, path)


@router.get("/keyring.gpg")
async def keyring(console: ConsoleDep) -> Response:
    """The public keyring of the console's signing key (binary, for gpgv and sstream-query)."""
    data = await run_in_threadpool(signing_key.public_keyring, console.settings)
    return Response(
        data,
        media_type="application/pgp-keys",
        headers={"Content-Disposition": 'attachment; filename="osbake-console-keyring.gpg"'},
    )


@router.post("/builds/{build_id}/unbless")
async def unbless_build(
    build_id: Id, session: SessionDep, console: ConsoleDep, who: Admin
) -> Response:
    retention.unbless(
        session,
        console.settings,
        builds.get_build(session, build_id),
        who.name,
        console.bless_hooks,
    )
    return RedirectResponse(f"/builds/{build_id}", status_code=303)


@router.get("/configurations/{name}/releases")
def release_page(
    request: Request, name: ConfigName, session: SessionDep, console: ConsoleDep, who: Viewer
) -> HTMLResponse:
    configuration = builds.get_configuration(session, name)
    data = views.release_json(session, configuration.id)
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        "releases.html",
        {
            "who": who,
            "csrf": csrf_token(request),
            "Role": Role,
            "configuration": configuration,
            "fingerprint": signing_key.fingerprint(console.settings),
            **data,
        },
    )
    return response
