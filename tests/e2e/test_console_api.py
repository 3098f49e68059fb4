"""The console through its REST API with a token, on PostgreSQL and Redis, with a real build.

A build farm in miniature: `osbake serve --db postgresql://... --queue redis://...
--workers 0` and one `osbake worker --server URL --token T`, building
examples/debian-minimal.yaml imported as a tar archive (recipe + files/).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.service_support import (
    RunningConsole,
    backend,
    build_runtime,
    start_worker,
    stop_group,
)

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


class Farm:
    def __init__(self, console: RunningConsole, worker: subprocess.Popen[Any]) -> None:
        self.console = console
        self.worker = worker


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    with backend("postgres+redis") as args:
        console = RunningConsole(
            tmp_path_factory.mktemp("farm") / "data", args=[*args, "--workers", "0"]
        )
        worker = start_worker(console, env=build_runtime())  # builds run as osbake-build
        try:
            yield Farm(console, worker)
        finally:
            stop_group(worker)
            console.stop()


def example_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(EXAMPLES / "debian-minimal.yaml", arcname="debian-minimal.yaml")
        tar.add(EXAMPLES / "files", arcname="files")
    return buffer.getvalue()


def test_import_build_download_search_and_trace_back(farm: Farm, tmp_path: Path) -> None:
    console = farm.console
    viewer = console.make_token("viewer", "auditor")
    with console.api() as api, console.api(viewer) as looker:
        reply = api.post(
            "/api/configurations/import",
            data={"name": "debian-minimal", "message": "from examples/"},
            files={"archive": ("debian-minimal.tar.gz", example_archive(), "application/gzip")},
        )
        assert reply.status_code == 201, reply.text
        assert reply.json()["recipe_file"] == "debian-minimal.yaml"

        assert (
            looker.post("/api/builds", json={"configuration": "debian-minimal"}).status_code == 403
        )
        reply = api.post("/api/builds", json={"configuration": "debian-minimal", "milestone": "rc"})
        assert reply.status_code == 201, reply.text
        build_id = reply.json()[0]["id"]
        build = console.wait_state(build_id, {"succeeded", "failed", "cancelled"}, 900)
        assert build["state"] == "succeeded", (
            f"{build['reason']}\n{api.get(f'/api/builds/{build_id}').json().get('log_tail')}"
        )
        assert {a["format"] for a in build["artifacts"]} == {"tar", "oci"}

        for artifact in build["artifacts"]:
            target = tmp_path / artifact["file"]
            digest = hashlib.sha256()
            with looker.stream("GET", artifact["url"]) as response, target.open("wb") as handle:
                assert response.headers["x-checksum-sha256"] == artifact["sha256"]
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    handle.write(chunk)
            assert digest.hexdigest() == artifact["sha256"]

        # resume a download half-way (HTTP range)
        tar = next(a for a in build["artifacts"] if a["format"] == "tar")
        half = tar["size"] // 2
        rest = looker.get(tar["url"], headers={"Range": f"bytes={half}-"})
        assert rest.status_code == 206
        assert rest.content == (tmp_path / tar["file"]).read_bytes()[half:]

        manifest = looker.get(f"/api/builds/{build_id}/manifest").json()
        less = next(p for p in manifest["packages"] if p["name"] == "less")
        hits = looker.get(
            "/api/search/packages", params={"name": "less", "version": less["version"]}
        ).json()
        assert [h["build"]["id"] for h in hits] == [build_id]

        origin = looker.post("/api/lookup", json={"sha256": tar["sha256"]}).json()
        assert (origin["configuration"], origin["version"], origin["variant"]) == (
            "debian-minimal",
            1,
            None,
        )

        # a tarball has no disk image to boot, so it cannot be blessed (`osbake boot` of
        # disk images lands with the disk issue; blessing a booted image is tested with a
        # stand-in boot command in tests/integration/test_service_console.py)
        assert build["boot_test"] == {
            "state": "none",
            "detail": "no boot test: no disk image",
            "datasource": "none",  # the configuration's default boot test
            "hardware": "kvm",
        }
        refused = api.post(f"/api/builds/{build_id}/bless")
        assert refused.status_code == 409
