"""Credentials, sessions, uploads and deliveries: what a shared console must refuse."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time

import pytest
from sqlalchemy import select

from osbake.errors import UsageError
from osbake.service import auth, builds, configs
from osbake.service.commands import embedded_worker_token
from osbake.service.models import Build, Role, Token, now
from tests.unit.service.service_harness import RECIPE, Harness


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:300]
    return match.group(1)


def login(harness: Harness, name: str = "alice", password: str = "alice-password") -> str:
    token = csrf(harness.client.get("/login").text)
    reply = harness.client.post(
        "/login",
        data={"csrf_token": token, "name": name, "password": password, "next": "/"},
        follow_redirects=False,
    )
    assert reply.status_code == 303, reply.text
    return csrf(harness.client.get("/").text)


# -- tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asker", "role", "status"),
    [
        ("viewer", "viewer", 201),
        ("viewer", "builder", 403),
        ("viewer", "admin", 403),
        ("viewer", "worker", 403),
        ("builder", "viewer", 201),
        ("builder", "builder", 201),
        ("builder", "admin", 403),
        ("builder", "worker", 403),
        ("admin", "admin", 201),
        ("admin", "worker", 201),
        ("worker", "viewer", 403),
        ("worker", "worker", 403),
    ],
)
def test_nobody_makes_a_token_with_more_rights_than_their_own(
    harness: Harness, asker: str, role: str, status: int
) -> None:
    reply = harness.call("POST", "/api/tokens", asker, json={"name": "t", "role": role})
    assert reply.status_code == status, reply.text
    if status == 201:
        made = reply.json()["token"]
        who = harness.client.get("/api/status", headers={"Authorization": f"Bearer {made}"})
        if role != "worker":
            assert who.json()["you"]["role"] == role
    else:
        assert "error" in reply.json()


def test_a_viewer_user_cannot_make_a_builder_token_through_the_page_either(
    harness: Harness,
) -> None:
    token = login(harness, "victor", "victor-password")
    reply = harness.client.post(
        "/api/tokens", json={"role": "builder"}, headers={"X-CSRF-Token": token}
    )
    assert reply.status_code == 403
    refused = harness.client.post(
        "/admin/tokens", data={"csrf_token": token, "role": "admin"}, follow_redirects=False
    )
    assert refused.status_code == 403


def test_anonymous_readers_make_no_tokens(harness: Harness) -> None:
    object.__setattr__(harness.console.settings, "anonymous_read", True)
    assert harness.client.get("/api/builds").status_code == 200
    assert harness.client.post("/api/tokens", json={"role": "viewer"}).status_code == 401


def test_tokens_expire_and_are_listed_and_revoked(harness: Harness) -> None:
    made = harness.call(
        "POST", "/api/tokens", "builder", json={"name": "ci", "role": "builder", "expires_days": 7}
    ).json()
    assert made["expires"] is not None
    secret = {"Authorization": f"Bearer {made['token']}"}
    assert harness.client.get("/api/status", headers=secret).status_code == 200
    listed = harness.call("GET", "/api/tokens", "admin").json()
    assert {t["name"] for t in listed} >= {"ci", "viewer", "builder", "admin", "worker"}
    mine = harness.client.get("/api/tokens", headers=secret).json()
    assert [t["id"] for t in mine] == [made["id"]]  # a token sees itself, not the others
    assert harness.call("DELETE", f"/api/tokens/{made['id']}", "viewer").status_code == 404
    assert harness.client.delete(f"/api/tokens/{made['id']}", headers=secret).status_code == 204
    gone = harness.client.get("/api/status", headers=secret)
    assert gone.status_code == 401
    assert "revoked" in gone.json()["error"]
    listed = {t["id"]: t for t in harness.call("GET", "/api/tokens", "admin").json()}
    assert not listed[made["id"]]["valid"]
    assert listed[made["id"]]["revoked"]

    with harness.console.db.session() as session:
        token = session.scalars(select(Token).where(Token.name == "viewer")).one()
        token.expires = now() - 1
        session.commit()
    expired = harness.call("GET", "/api/status", "viewer")
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]


def test_the_embedded_workers_token_is_reused_not_made_anew(harness: Harness) -> None:
    data_dir = harness.console.settings.data_dir
    with harness.console.db.session() as session:
        first = embedded_worker_token(session, data_dir)
        again = embedded_worker_token(session, data_dir)
        assert first == again
        assert (data_dir / "worker_token").stat().st_mode & 0o077 == 0
        auth.revoke_token(auth.lookup_token(session, first))  # type: ignore[arg-type]
        session.commit()
        fresh = embedded_worker_token(session, data_dir)
        assert fresh != first
        live = session.scalars(
            select(Token).where(Token.name == "embedded worker", Token.revoked.is_(None))
        ).all()
        assert len(live) == 1


# -- sessions and log-in ---------------------------------------------------------------------


def test_logging_out_ends_the_session_on_the_console(harness: Harness) -> None:
    token = login(harness)
    cookie = harness.client.cookies.get("osbake_session")
    assert harness.client.get("/api/status").status_code == 200
    reply = harness.client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert reply.status_code == 303
    # a copy of the old cookie (stolen, or kept by a browser) no longer works
    harness.client.cookies.set("osbake_session", cookie)
    assert harness.client.get("/api/status").status_code == 401
    page = harness.client.get("/", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login")


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
    ],
)
def test_log_in_redirects_only_within_the_console(harness: Harness, target: str) -> None:
    token = csrf(harness.client.get("/login", params={"next": target}).text)
    page = harness.client.get("/login", params={"next": target}).text
    assert "evil" not in page
    reply = harness.client.post(
        "/login",
        data={"csrf_token": token, "name": "alice", "password": "alice-password", "next": target},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == "/"


def test_log_in_goes_back_to_the_page_asked_for(harness: Harness) -> None:
    harness.configuration()
    page = harness.client.get("/configurations/demo?x=1", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fconfigurations%2Fdemo%3Fx%3D1"
    token = csrf(harness.client.get(page.headers["location"]).text)
    reply = harness.client.post(
        "/login",
        data={
            "csrf_token": token,
            "name": "alice",
            "password": "alice-password",
            "next": "/configurations/demo?x=1",
        },
        follow_redirects=False,
    )
    assert reply.headers["location"] == "/configurations/demo?x=1"


# -- the web forms' uploads ------------------------------------------------------------------


def recipe_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (
            ("uploaded/recipe.yaml", RECIPE.replace("name: demo", "name: uploaded")),
            ("uploaded/files/motd", "hello\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


def test_a_recipe_archive_uploaded_in_the_form_is_used(harness: Harness) -> None:
    token = login(harness)
    reply = harness.client.post(
        "/configurations",
        data={"csrf_token": token, "name": "uploaded", "recipe": "this text is not used"},
        files={"archive": ("uploaded.tar.gz", recipe_archive(), "application/gzip")},
        follow_redirects=False,
    )
    assert reply.status_code == 303, reply.text
    version = harness.call("GET", "/api/configurations/uploaded/versions/1", "viewer").json()
    assert {f["path"] for f in version["files"]} == {"recipe.yaml", "files/motd"}
    assert version["source"] == "archive uploaded.tar.gz"


def test_a_manifest_uploaded_in_the_lookup_form_is_used(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    harness.run_fake(build["id"])
    manifest = harness.call("GET", f"/api/builds/{build['id']}/manifest", "viewer").content
    token = login(harness)
    reply = harness.client.post(
        "/lookup",
        data={"csrf_token": token},
        files={"manifest_file": ("demo.manifest.json", manifest, "application/json")},
    )
    assert reply.status_code == 200, reply.text
    assert f'href="/builds/{build["id"]}"' in reply.text


# -- docs, artifacts, reports ----------------------------------------------------------------


def test_the_api_page_works_offline(harness: Harness) -> None:
    page = harness.client.get("/docs").text
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert scripts
    for url in scripts:
        assert harness.client.get(url).status_code == 200, url
    assert harness.client.get("/openapi.json").json()["info"]["title"]


def test_head_tells_an_artifacts_size_and_checksum(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    harness.run_fake(build["id"])
    artifact = harness.call("GET", f"/api/builds/{build['id']}", "viewer").json()["artifacts"][0]
    head = harness.call("HEAD", artifact["url"], "viewer")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == artifact["size"]
    assert head.headers["x-checksum-sha256"] == artifact["sha256"]


def test_an_artifact_missing_on_disk_is_a_404_not_a_500(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    harness.run_fake(build["id"])
    (builds.artifact_dir(harness.console.settings, build["id"]) / "demo.tar").unlink()
    reply = harness.call("GET", f"/api/builds/{build['id']}/artifacts/demo.tar", "viewer")
    assert reply.status_code == 404
    assert "missing" in reply.json()["error"]


def test_an_upload_that_is_not_what_the_worker_claims_is_refused(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    w = "worker"
    assert harness.call(
        "POST", f"/api/worker/builds/{build['id']}/claim", w, json={"worker": "w"}
    ).is_success
    reply = harness.call(
        "PUT",
        f"/api/worker/builds/{build['id']}/files/demo.tar",
        w,
        content=b"what arrived",
        headers={"X-Checksum-Sha256": hashlib.sha256(b"what was sent").hexdigest()},
    )
    assert reply.status_code == 422
    assert "claims" in reply.json()["error"]
    folder = builds.artifact_dir(harness.console.settings, build["id"])
    assert not (folder / "demo.tar").exists()
    assert not list(folder.glob(".*partial"))
    missing = harness.call(
        "PUT", f"/api/worker/builds/{build['id']}/files/demo.tar", w, content=b"x"
    )
    assert missing.status_code == 422  # no claim, no upload


def test_a_manifest_whose_sha256_differs_from_the_upload_fails_the_build(
    harness: Harness,
) -> None:
    harness.configuration()
    build = harness.build()
    w = "worker"
    harness.call("POST", f"/api/worker/builds/{build['id']}/claim", w, json={"worker": "w"})
    harness.upload(build["id"], "demo.tar", b"the real bytes")
    manifest = {
        "osbake_version": "test",
        "image": "demo",
        "name": "demo",
        "arch": "amd64",
        "distro": "debian",
        "release": "bookworm",
        "recipe": {"name": "demo"},
        "recipe_sha256": "r" * 64,
        "packages": [],
        "artifacts": [
            {"file": "demo.tar", "format": "tar", "size": 14, "sha256": "0" * 64},
        ],
        "build": {"started": "2026-01-01T00:00:00+00:00"},
    }
    reply = harness.call(
        "POST",
        f"/api/worker/builds/{build['id']}/finish",
        w,
        json={"ok": True, "manifest": manifest},
    )
    assert reply.json() == {"state": "failed"}
    data = harness.call("GET", f"/api/builds/{build['id']}", "viewer").json()
    assert "sha256" in data["reason"]
    assert data["artifacts"] == []
    folder = builds.artifact_dir(harness.console.settings, build["id"])
    assert not folder.exists()


def test_a_finished_build_has_no_step_left_running(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    w = "worker"
    harness.call("POST", f"/api/worker/builds/{build['id']}/claim", w, json={"worker": "w"})
    harness.call(
        "POST",
        f"/api/worker/builds/{build['id']}/events",
        w,
        json=[
            {"event": "begin", "steps": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
            {"event": "step", "name": "a"},
            {"event": "result", "name": "a", "status": "done", "seconds": 1},
            {"event": "step", "name": "b"},
        ],
    )
    harness.call("POST", f"/api/worker/builds/{build['id']}/finish", w, json={"ok": False})
    data = harness.call("GET", f"/api/builds/{build['id']}", "viewer").json()
    assert [(s["name"], s["state"]) for s in data["steps"]] == [
        ("a", "done"),
        ("b", "failed"),
        ("c", "skipped"),
    ]
    assert data["failed_step"] == "b"


def test_a_worker_reports_only_on_the_build_it_claimed(harness: Harness) -> None:
    harness.configuration()
    mine, theirs = harness.build(), harness.build()
    with harness.console.db.session() as session:
        _, other = auth.create_token(session, "other", Role.WORKER, granter=Role.ADMIN)
        session.commit()
    other_worker = {"Authorization": f"Bearer {other}"}
    harness.call("POST", f"/api/worker/builds/{mine['id']}/claim", "worker", json={"worker": "a"})
    for method, url, body in (
        ("POST", f"/api/worker/builds/{mine['id']}/events", []),
        ("POST", f"/api/worker/builds/{mine['id']}/finish", {"ok": True}),
        ("GET", f"/api/worker/builds/{mine['id']}/config.tar.gz", None),
        ("POST", f"/api/worker/builds/{theirs['id']}/events", []),
    ):
        reply = harness.client.request(method, url, headers=other_worker, json=body)
        assert reply.status_code == 409, (url, reply.text)
        assert "claimed" in reply.json()["error"]
    upload = harness.client.put(
        f"/api/worker/builds/{mine['id']}/files/x.tar",
        headers={**other_worker, "X-Checksum-Sha256": hashlib.sha256(b"x").hexdigest()},
        content=b"x",
    )
    assert upload.status_code == 409
    # an admin is not a worker
    assert (
        harness.call(
            "POST", f"/api/worker/builds/{mine['id']}/events", "admin", json=[]
        ).status_code
        == 403
    )
    assert harness.call("GET", f"/api/builds/{mine['id']}", "viewer").json()["state"] == "running"


# -- delivery: a build is never queued forever -----------------------------------------------


def test_a_build_taken_off_the_queue_and_never_claimed_is_put_back(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    queue = harness.queue
    assert queue.take() == build["id"]  # a worker takes the id ... and dies
    with harness.console.db.session() as session:
        assert builds.requeue_lost(session, queue, after=30) == []  # it may still claim it
        session.get(Build, build["id"]).enqueued = time.time() - 31  # type: ignore[union-attr]
        session.commit()
        assert builds.requeue_lost(session, queue, after=30) == [build["id"]]
        assert queue.pending() == [build["id"]]
        # still on the queue: not put there twice
        session.get(Build, build["id"]).enqueued = time.time() - 31  # type: ignore[union-attr]
        session.commit()
        assert builds.requeue_lost(session, queue, after=30) == []
    assert queue.pending() == [build["id"]]
    harness.run_fake(build["id"])  # the next worker runs it
    claimed_twice = harness.call(
        "POST", f"/api/worker/builds/{build['id']}/claim", "worker", json={"worker": "late"}
    )
    assert claimed_twice.status_code == 409  # at least once, and claimed once


# -- stored configurations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ref"),
    [
        ("https://git.invalid/recipes.git", "main\n"),
        ("https://git.invalid/recipes.git\n", "main"),
        ("https://git.invalid/recipes.git", "main\n--upload-pack=touch /tmp/x"),
    ],
)
def test_a_git_url_or_ref_with_a_trailing_newline_is_refused(url: str, ref: str) -> None:
    # Refused before git runs (a unit test may not start it: it would fail differently).
    with pytest.raises(UsageError, match="does not look like"):
        configs.from_git(url, ref)


def test_the_import_route_refuses_a_ref_with_a_newline(harness: Harness) -> None:
    form = {"name": "x", "git_url": "https://git.invalid/recipes.git", "git_ref": "main\n"}
    reply = harness.call("POST", "/api/configurations/import", "builder", data=form)
    assert reply.status_code == 422, reply.text
    assert reply.json()["location"] == "key 'body.git_ref'"


def variant_repository(uri: str) -> str:
    return RECIPE.replace(
        "slim: {packages: [less]}",
        f"slim:\n    repositories:\n      - {{name: extra, uri: '{uri}', suites: [bookworm]}}",
    )


@pytest.mark.parametrize(
    ("recipe", "scheme", "line", "key"),
    [
        (RECIPE + "mirror: file:///srv/mirror\n", "file", 10, "mirror"),
        (RECIPE + "mirror: copy:///srv/mirror/\n", "copy", 10, "mirror"),
        (
            RECIPE + "repositories:\n  - {name: x, uri: 'file:///srv/x', suites: [bookworm]}\n",
            "file",
            11,
            "repositories[0].uri",
        ),
        (variant_repository("copy:///srv/extra"), "copy", 11, "repositories[0].uri"),
        (
            RECIPE.replace("slim: {packages: [less]}", "slim: {mirror: 'file:///srv/m'}"),
            "file",
            9,
            "mirror",
        ),
    ],
)
def test_a_mirror_or_repository_on_the_build_host_is_refused(
    harness: Harness, recipe: str, scheme: str, line: int, key: str
) -> None:
    reply = harness.call(
        "POST",
        "/api/configurations",
        "builder",
        json={"name": "h", "files": {"recipe.yaml": recipe}},
    )
    assert reply.status_code == 422, reply.text
    error = reply.json()
    assert f"{scheme}://" in error["error"]
    assert error["location"] == f"recipe.yaml:{line}, key '{key}'"
    assert harness.call("GET", "/api/configurations/h", "viewer").status_code == 404


def test_a_mirror_and_repositories_on_the_network_are_accepted(harness: Harness) -> None:
    recipe = variant_repository("https://repo.invalid/debian") + "mirror: http://m.invalid/d\n"
    harness.configuration("net", recipe)


@pytest.mark.parametrize(
    ("recipe", "key", "says"),
    [
        (
            RECIPE + "files:\n  - {src: ../../../../etc/shadow, dest: /etc/x}\n",
            "files[0].src",
            "leaves the recipe's folder",
        ),
        ("extends: ../../../../../etc/passwd\n" + RECIPE, "extends", "outside the configuration"),
        ("extends: /etc/passwd\n" + RECIPE, "extends", "outside the configuration"),
    ],
)
def test_a_recipe_reaching_outside_its_configuration_is_refused(
    harness: Harness, recipe: str, key: str, says: str
) -> None:
    reply = harness.call(
        "POST",
        "/api/configurations",
        "builder",
        json={"name": "o", "files": {"recipe.yaml": recipe}},
    )
    assert reply.status_code == 422, reply.text
    error = reply.json()
    assert says in error["error"]
    assert error["location"].startswith("recipe.yaml:")
    assert error["location"].endswith(f"key '{key}'")
    assert harness.call("GET", "/api/configurations/o", "viewer").status_code == 404
