"""schemathesis against the console's own OpenAPI document: no 5xx, no undocumented status.

A real `osbake serve` on 127.0.0.1 (SQLite, no worker), with a configuration and a
succeeded build in it, gets requests generated from /openapi.json for every
operation (valid and invalid ones); each answer must not be a server error and
its status must be one the document lists for that operation, with its content
type. Worker operations are called with a worker token, the rest with an admin
token (made again if a generated request revokes it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (  # type: ignore[attr-defined]
    content_type_conformance,
    not_a_server_error,
    status_code_conformance,
)

from tests.integration.service_support import (
    RunningConsole,
    add_configuration,
    backend,
    start_build,
)

pytestmark = pytest.mark.integration

# requests per operation: about a minute on SQLite, less on PostgreSQL (same code paths)
EXAMPLES = {"sqlite": 25, "postgres+redis": 12}
RECIPE = "name: probe\ndistro: debian\nrelease: bookworm\narch: [amd64]\noutputs: [tar]\n"


class Credentials:
    def __init__(self, console: RunningConsole) -> None:
        self.console = console
        self.admin = console.token
        self.worker = console.make_token("worker", "schemathesis worker")
        self.examples = 25

    def for_path(self, path: str) -> dict[str, str]:
        if path.startswith("/api/worker/"):
            token = self.worker
            if (
                httpx.get(
                    self.console.url + "/api/worker/hello",
                    headers={"Authorization": f"Bearer {token}"},
                ).status_code
                == 401
            ):
                self.worker = token = self.console.make_token("worker", "schemathesis worker")
        else:
            token = self.admin
            if (
                httpx.get(
                    self.console.url + "/api/status", headers={"Authorization": f"Bearer {token}"}
                ).status_code
                == 401
            ):
                self.admin = token = self.console.make_token("admin", "schemathesis")
        return {"Authorization": f"Bearer {token}"}


def seed(console: RunningConsole, worker: str) -> None:
    """A configuration and a succeeded build with an artifact, reported as a worker does."""
    with console.api() as api, console.api(worker) as work:
        add_configuration(api, "probe", RECIPE)
        build_id = start_build(api, "probe")
        assert work.post(f"/api/worker/builds/{build_id}/claim", json={"worker": "w"}).is_success
        data = b"an image\n" * 100
        digest = hashlib.sha256(data).hexdigest()
        put = work.put(
            f"/api/worker/builds/{build_id}/files/probe.tar",
            content=data,
            headers={"X-Checksum-Sha256": digest},
        )
        assert put.status_code == 201, put.text
        manifest = {
            "osbake_version": "test",
            "image": "probe",
            "name": "probe",
            "arch": "amd64",
            "distro": "debian",
            "release": "bookworm",
            "recipe": {"name": "probe"},
            "recipe_sha256": "a" * 64,
            "packages": [
                {
                    "name": "curl",
                    "version": "1",
                    "arch": "amd64",
                    "source": "curl",
                    "source_version": "1",
                }
            ],
            "artifacts": [
                {"file": "probe.tar", "format": "tar", "size": len(data), "sha256": digest}
            ],
            "build": {"started": "2026-01-01T00:00:00+00:00"},
        }
        done = work.post(
            f"/api/worker/builds/{build_id}/finish", json={"ok": True, "manifest": manifest}
        )
        assert done.json() == {"state": "succeeded"}, done.text


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningConsole, Any]]:
    with backend(request.param) as args:
        console = RunningConsole(
            tmp_path_factory.mktemp("openapi") / "data",
            args=[*args, "--workers", "0", "--stream-seconds", "1"],
        )
        try:
            credentials = Credentials(console)
            credentials.examples = EXAMPLES[request.param]
            seed(console, credentials.worker)
            yield console, credentials
        finally:
            console.stop()


def test_the_api_keeps_to_its_document(running: tuple[RunningConsole, Any]) -> None:
    console, credentials = running
    document = httpx.get(console.url + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=credentials.examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=console.url,
                headers=credentials.for_path(case.path),
                checks=[not_a_server_error, status_code_conformance, content_type_conformance],
                timeout=30,
            )

        try:
            check()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # every operation is tried; all failures are shown
            failures.append(f"{operation.label}:\n{exc}")
    assert operations == len([m for path in document["paths"].values() for m in path]), (
        "every operation of the document was tried"
    )
    assert not failures, "\n\n".join(failures)
