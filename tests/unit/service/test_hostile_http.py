"""Hostile HTTP requests: each gets its 4xx in the one error format, and nothing else happens.

Oversized and compressed-bomb bodies, ids out of range, path tricks in file
names, bad content types, control characters, unknown routes.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
from typing import Any

import pytest

from osbake.service import builds
from tests.unit.service.service_harness import Harness

ERROR_KEYS = {"error", "hint", "location", "detail"}


def refused(reply: Any, *statuses: int) -> dict[str, Any]:
    assert reply.status_code in statuses, (reply.status_code, reply.text[:500])
    body: dict[str, Any] = reply.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] and body["detail"]
    return body


def asgi_scope(harness: Harness, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {harness.tokens['builder']}".encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }


def test_a_body_declared_too_large_is_refused_before_it_is_read(harness: Harness) -> None:
    """Call the application directly and count what it pulls of the body."""
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1 << 20
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = asgi_scope(
        harness,
        "/api/configurations",
        [(b"content-type", b"application/json"), (b"content-length", str(8 << 30).encode())],
    )
    asyncio.run(harness.app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert pulled == 0


def test_a_body_that_grows_past_the_limit_is_cut_off(harness: Harness) -> None:
    """No Content-Length (chunked): the application stops pulling at the limit."""
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled > 10_000:  # 10 GiB if nothing stopped it
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": b"[" * (1 << 20), "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = asgi_scope(harness, "/api/builds", [(b"content-type", b"application/json")])
    asyncio.run(harness.app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"larger than" in sent[1]["body"]
    assert pulled <= 2  # the default limit is 1 MiB


def test_a_compressed_body_is_refused(harness: Harness) -> None:
    bomb = gzip.compress(b"{" + b" " * (50 << 20) + b"}")
    reply = harness.call(
        "POST",
        "/api/builds",
        "builder",
        content=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    refused(reply, 415)


def test_a_tar_bomb_is_refused_without_unpacking_it(harness: Harness) -> None:
    """A small .tar.gz whose one file unpacks to 1 GiB of zeros."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as packed:
        info = tarfile.TarInfo("recipe.yaml")
        info.size = 1 << 30
        header = info.tobuf()
        packed.write(header)
        zeros = b"\0" * (1 << 20)
        for _ in range(1024):
            packed.write(zeros)
    assert len(raw.getvalue()) < 2 << 20
    reply = harness.call(
        "POST",
        "/api/configurations/import",
        "builder",
        data={"name": "bomb"},
        files={"archive": ("bomb.tar.gz", raw.getvalue(), "application/gzip")},
    )
    body = refused(reply, 422)
    assert "MiB" in body["error"]
    assert harness.call("GET", "/api/configurations/bomb", "viewer").status_code == 404


def test_an_archive_with_too_many_entries_is_refused(harness: Harness) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for n in range(4100):
            info = tarfile.TarInfo(f"d{n}")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
    reply = harness.call(
        "POST",
        "/api/configurations/import",
        "builder",
        data={"name": "many"},
        files={"archive": ("many.tar.gz", raw.getvalue(), "application/gzip")},
    )
    assert "entries" in refused(reply, 422)["error"]


@pytest.mark.parametrize(
    ("url", "statuses"),
    [
        ("/api/builds/0", (422,)),
        ("/api/builds/-1", (422,)),
        ("/api/builds/99999999999999999999999", (422,)),
        ("/api/builds/2147483648", (422,)),
        ("/api/builds/2147483647", (404,)),
        ("/api/builds/abc", (422,)),
        ("/api/builds/1e3", (422,)),
        ("/api/builds?limit=100000000000000000000", (422,)),
        ("/api/builds?state=exploded", (422,)),
        ("/api/configurations/demo/versions/99999999999999999999", (422,)),
        ("/api/configurations/demo/diff?a=1&b=999999999999999", (422,)),
        ("/api/configurations/NO%00PE", (422,)),
        ("/api/configurations/" + "a" * 300, (422,)),
        ("/api/search/packages?name=curl%00", (422,)),
        ("/api/search/packages", (422,)),
        ("/api/nowhere", (404,)),
    ],
)
def test_bad_ids_and_parameters_are_4xx(harness: Harness, url: str, statuses: tuple[int]) -> None:
    harness.configuration()
    refused(harness.call("GET", url, "viewer"), *statuses)


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fsecret_key",
        "%2E%2E%2F%2E%2E%2Fosbake.db",
        "%2E%2E",
        ".demo.tar.partial",
        "demo.tar%00.sha256",
        "secret_key",
        "..%5C..%5Csecret_key",
        "demo.tar%2F..%2F..%2F..%2Fsecret_key",
    ],
)
def test_path_tricks_in_artifact_names_reach_nothing(harness: Harness, name: str) -> None:
    harness.configuration()
    build = harness.build()
    harness.run_fake(build["id"])
    secret = harness.console.settings.secret_key
    reply = harness.call("GET", f"/api/builds/{build['id']}/artifacts/{name}", "viewer")
    assert secret.encode() not in reply.content
    refused(reply, 404, 422)


@pytest.mark.parametrize("name", ["..", ".hidden", "a%2Fb", "%2E%2E", "x%00y", "a" * 300])
def test_path_tricks_in_uploaded_names_are_refused(harness: Harness, name: str) -> None:
    harness.configuration()
    build = harness.build()
    harness.call("POST", f"/api/worker/builds/{build['id']}/claim", "worker", json={"worker": "w"})
    reply = harness.call(
        "PUT",
        f"/api/worker/builds/{build['id']}/files/{name}",
        "worker",
        content=b"x",
        headers={
            "X-Checksum-Sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        },
    )
    refused(reply, 404, 422)
    folder = builds.artifact_dir(harness.console.settings, build["id"])
    data_dir = harness.console.settings.data_dir
    assert not folder.exists() or list(folder.iterdir()) == []
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        [
            "artifacts",
            "logs",
            "scratch",
            "osbake.db",
            "osbake.db-shm",
            "osbake.db-wal",
            "secret_key",
        ]
    )


@pytest.mark.parametrize(
    ("kind", "content"),
    [
        ("text/plain", b'{"configuration": "demo"}'),
        ("application/json", b'{"configuration": '),
        ("application/json", b"[1, 2, 3]"),
        ("application/json", b'"\xff\xfe"'),
        ("application/x-www-form-urlencoded", b"configuration=demo"),
        ("multipart/form-data; boundary=x", b"--x\r\nbroken"),
        ("application/json", b'{"configuration": "demo", "version": 1e400}'),
        ("application/json", b'{"configuration": "de\\u0000mo"}'),
        ("application/json", b'{"configuration": "demo", "milestone": "\\ud800"}'),
    ],
)
def test_bad_content_is_a_422(harness: Harness, kind: str, content: bytes) -> None:
    harness.configuration()
    reply = harness.call(
        "POST", "/api/builds", "builder", content=content, headers={"Content-Type": kind}
    )
    refused(reply, 422)
    assert harness.queue.ids == []


def test_control_characters_and_huge_values_in_json_are_refused(harness: Harness) -> None:
    for body in (
        {"name": "x\u0000", "role": "viewer"},
        {"name": "x" * 10_000, "role": "viewer"},
        {"name": "x", "role": "root"},
        {"name": "x", "role": "viewer", "expires_days": 10**30},
    ):
        refused(harness.call("POST", "/api/tokens", "admin", json=body), 422)
    for files in ({"../../etc/passwd": "x"}, {"/etc/passwd": "x"}, {"a\u0000b": "x"}, {"": "x"}):
        reply = harness.call(
            "POST", "/api/configurations", "builder", json={"name": "evil", "files": files}
        )
        refused(reply, 422)


def test_unknown_routes_and_methods_answer_in_the_same_format(harness: Harness) -> None:
    refused(harness.call("GET", "/api/no/such/thing", "viewer"), 404)
    refused(harness.call("PATCH", "/api/builds", "admin"), 405)
    refused(harness.client.get("/api/builds", headers={"Authorization": "Basic YTpi"}), 401)
    refused(
        harness.client.get("/api/builds", headers={"Authorization": "Bearer " + "x" * 5000}), 401
    )
