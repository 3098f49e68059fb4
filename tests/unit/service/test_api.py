"""The REST API against an in-process console (SQLite, a recording queue, no worker)."""

from __future__ import annotations

import hashlib
import time

from osbake.service import builds, retention, schedules
from osbake.service.models import Build
from tests.unit.service.service_harness import RECIPE, Harness


def test_starting_a_build_needs_a_builder_token(harness: Harness) -> None:
    harness.configuration()
    body = {"configuration": "demo"}
    assert harness.client.post("/api/builds", json=body).status_code == 401
    assert (
        harness.client.post(
            "/api/builds", json=body, headers={"Authorization": "Bearer osb_wrong"}
        ).status_code
        == 401
    )
    assert harness.call("POST", "/api/builds", "viewer", json=body).status_code == 403
    assert harness.call("POST", "/api/builds", "worker", json=body).status_code == 403
    assert harness.call("POST", "/api/builds", "builder", json=body).status_code == 201
    assert harness.queue.ids == [1]


def test_anonymous_read_is_off_by_default(harness: Harness) -> None:
    assert harness.client.get("/api/builds").status_code == 401
    assert harness.call("GET", "/api/builds", "viewer").status_code == 200


def test_a_broken_recipe_is_refused_with_its_location(harness: Harness) -> None:
    response = harness.call(
        "POST",
        "/api/configurations",
        "builder",
        json={
            "name": "bad",
            "files": {"recipe.yaml": "name: bad\noutputs: [tar]\npackges: [curl]\n"},
        },
    )
    assert response.status_code == 422
    error = response.json()
    assert error["location"].startswith("recipe.yaml:3")
    assert "packges" in error["error"]
    assert "packages" in (error["hint"] or "")
    assert harness.call("GET", "/api/configurations/bad", "viewer").status_code == 404


def test_every_edit_is_a_version_and_versions_diff(harness: Harness) -> None:
    first = harness.configuration()
    assert first["number"] == 1
    assert first["new_version"]
    assert [(t["variant"], t["arch"]) for t in first["targets"]] == [
        (None, "amd64"),
        (None, "arm64"),
        ("slim", "amd64"),
        ("slim", "arm64"),
    ]
    again = harness.configuration()
    assert again["number"] == 1
    assert not again["new_version"]
    second = harness.configuration(recipe=RECIPE.replace("curl", "wget"))
    assert second["number"] == 2
    diff = harness.call("GET", "/api/configurations/demo/diff?a=1&b=2", "viewer").text
    assert "-packages: [curl]" in diff
    assert "+packages: [wget]" in diff
    versions = harness.call("GET", "/api/configurations/demo", "viewer").json()["versions"]
    assert [v["number"] for v in versions] == [1, 2]


def test_elements_folders_are_stored_and_checked(harness: Harness) -> None:
    recipe = "name: own\nelements: [hello]\noutputs: [tar]\n"
    element = "description: says hello\n"
    response = harness.call(
        "POST",
        "/api/configurations",
        "builder",
        json={
            "name": "own",
            "files": {
                "recipe.yaml": recipe,
                "elements/hello/element.yaml": element,
                "elements/hello/post-install/10-hello": "#!/bin/sh\necho hi\n",
            },
            "executable": ["elements/hello/post-install/10-hello"],
        },
    )
    assert response.status_code == 201, response.text
    files = harness.call("GET", "/api/configurations/own/versions/1", "viewer").json()["files"]
    assert {"path": "elements/hello/post-install/10-hello", "mode": "755", "size": 18} in files
    missing = harness.call(
        "POST",
        "/api/configurations",
        "builder",
        json={"name": "own2", "files": {"recipe.yaml": recipe}},
    )
    assert missing.status_code == 422
    assert "hello" in missing.json()["error"]


def test_matrix_builds_and_the_queue_position(harness: Harness) -> None:
    harness.configuration()
    response = harness.call(
        "POST",
        "/api/builds",
        "builder",
        json={"configuration": "demo", "matrix": True, "milestone": "beta"},
    )
    queued = response.json()
    assert len(queued) == 4
    assert [b["queue_position"] for b in queued] == [1, 2, 3, 4]
    assert {b["milestone"] for b in queued} == {"beta"}
    wrong = harness.call(
        "POST", "/api/builds", "builder", json={"configuration": "demo", "variant": "fat"}
    )
    assert wrong.status_code == 422
    assert "slim" in wrong.json()["hint"]


def test_a_build_runs_succeeds_and_its_artifact_downloads_in_ranges(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    assert harness.run_fake(build["id"]) == {"state": "succeeded"}
    data = harness.call("GET", f"/api/builds/{build['id']}", "viewer").json()
    assert data["state"] == "succeeded"
    assert [s["state"] for s in data["steps"]] == ["done", "done", "done"]
    artifact = data["artifacts"][0]
    whole = harness.call("GET", artifact["url"], "viewer")
    assert hashlib.sha256(whole.content).hexdigest() == artifact["sha256"]
    assert whole.headers["x-checksum-sha256"] == artifact["sha256"]
    part = harness.client.get(
        artifact["url"], headers={**harness.headers("viewer"), "Range": "bytes=10-19"}
    )
    assert part.status_code == 206
    assert part.content == whole.content[10:20]
    assert harness.call("GET", artifact["url"] + ".sha256", "viewer").text.startswith(
        artifact["sha256"]
    )
    log = harness.call("GET", f"/api/builds/{build['id']}/log", "viewer").text
    assert "==> packages" in log
    assert "packages output" in log


def test_a_failed_build_names_the_failing_step_and_shows_its_log_first(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    assert harness.run_fake(build["id"], fail_step="packages") == {"state": "failed"}
    data = harness.call("GET", f"/api/builds/{build['id']}", "viewer").json()
    assert data["failed_step"] == "packages"
    assert "step 'packages' failed" in data["reason"]
    assert any("packages output" in line for line in data["log_tail"])
    assert not any("bootstrap output" in line for line in data["log_tail"])
    assert [s["state"] for s in data["steps"]] == ["done", "failed", "skipped"]


def test_cancel_queued_and_running_builds(harness: Harness) -> None:
    harness.configuration()
    queued = harness.build()
    cancelled = harness.call("POST", f"/api/builds/{queued['id']}/cancel", "builder").json()
    assert cancelled["state"] == "cancelled"
    # the worker that picks it up is refused
    claim = harness.call(
        "POST", f"/api/worker/builds/{queued['id']}/claim", "worker", json={"worker": "w"}
    )
    assert claim.status_code == 409
    running = harness.build()
    harness.call(
        "POST", f"/api/worker/builds/{running['id']}/claim", "worker", json={"worker": "w"}
    )
    harness.call("POST", f"/api/builds/{running['id']}/cancel", "builder")
    reply = harness.call("POST", f"/api/worker/builds/{running['id']}/events", "worker", json=[])
    assert reply.json() == {"cancel": True}
    harness.call("POST", f"/api/worker/builds/{running['id']}/finish", "worker", json={"ok": False})
    assert (
        harness.call("GET", f"/api/builds/{running['id']}", "viewer").json()["state"] == "cancelled"
    )
    again = harness.call("POST", f"/api/builds/{running['id']}/cancel", "builder")
    assert again.status_code == 409


def test_retry_queues_the_same_version_variant_and_arch(harness: Harness) -> None:
    harness.configuration()
    build = harness.build(variant="slim", arch="arm64", milestone="rc")
    harness.run_fake(build["id"], fail_step="bootstrap")
    harness.configuration(recipe=RECIPE.replace("curl", "wget"))  # a newer version exists
    fresh = harness.call("POST", f"/api/builds/{build['id']}/retry", "builder").json()
    assert (fresh["version"], fresh["variant"], fresh["arch"], fresh["milestone"]) == (
        1,
        "slim",
        "arm64",
        "rc",
    )
    assert fresh["retry_of"] == build["id"]
    assert fresh["state"] == "queued"


def test_a_silent_worker_fails_its_build_with_that_reason(harness: Harness) -> None:
    harness.configuration()
    build = harness.build()
    harness.call("POST", f"/api/worker/builds/{build['id']}/claim", "worker", json={"worker": "w1"})
    harness.call(
        "POST",
        f"/api/worker/builds/{build['id']}/events",
        "worker",
        json=[{"event": "step", "time": 1.0, "name": "bootstrap"}],
    )
    with harness.console.db.session() as session:
        row = session.get(Build, build["id"])
        assert row is not None
        row.heartbeat = time.time() - 120
        session.commit()
        assert builds.reap(session, harness.console.settings) == [build["id"]]
    data = harness.call("GET", f"/api/builds/{build['id']}", "viewer").json()
    assert data["state"] == "failed"
    assert "stopped reporting during step 'bootstrap'" in data["reason"]
    late = harness.call("POST", f"/api/worker/builds/{build['id']}/events", "worker", json=[])
    assert late.status_code == 409  # the worker learns to stop


def test_bless_needs_a_passed_boot_test(harness: Harness) -> None:
    harness.configuration()
    tarball = harness.build()
    harness.run_fake(tarball["id"])
    refused = harness.call("POST", f"/api/builds/{tarball['id']}/bless")
    assert refused.status_code == 409
    assert "boot test" in refused.json()["error"]
    disk = harness.build()
    harness.run_fake(disk["id"], disk=True, boot="failed")
    assert harness.call("POST", f"/api/builds/{disk['id']}/bless").status_code == 409
    good = harness.build()
    harness.run_fake(good["id"], disk=True)
    assert harness.call("POST", f"/api/builds/{good['id']}/bless", "builder").status_code == 403
    blessed = harness.call("POST", f"/api/builds/{good['id']}/bless").json()
    assert blessed["blessed"]
    assert blessed["blessed_by"] == "token:admin"


def test_search_and_lookup(harness: Harness) -> None:
    harness.configuration()
    old = harness.build()
    harness.run_fake(old["id"], packages=[("openssl", "3.0.1")])
    new = harness.build(variant="slim")
    harness.run_fake(new["id"], packages=[("openssl", "3.0.2")])
    hits = harness.call("GET", "/api/search/packages?name=openssl", "viewer").json()
    assert [h["build"]["id"] for h in hits] == [new["id"], old["id"]]
    exact = harness.call("GET", "/api/search/packages?name=openssl&version=3.0.1", "viewer").json()
    assert [h["build"]["id"] for h in exact] == [old["id"]]
    sha = harness.call("GET", f"/api/builds/{new['id']}", "viewer").json()["artifacts"][0]["sha256"]
    found = harness.call("POST", "/api/lookup", "viewer", json={"sha256": sha}).json()
    assert (found["build"]["id"], found["version"], found["variant"]) == (new["id"], 1, "slim")
    manifest = harness.call("GET", f"/api/builds/{old['id']}/manifest", "viewer").json()
    manifest["artifacts"] = []  # as read from inside the image
    by_manifest = harness.call("POST", "/api/lookup", "viewer", json={"manifest": manifest}).json()
    assert by_manifest["build"]["id"] == old["id"]
    assert (
        harness.call("POST", "/api/lookup", "viewer", json={"sha256": "0" * 64}).status_code == 404
    )


def test_retention_keeps_the_last_n_and_the_blessed(harness: Harness) -> None:
    settings = harness.console.settings
    object.__setattr__(settings, "keep_builds", 2)
    harness.configuration()
    ids = []
    for index in range(5):
        build = harness.build()
        harness.run_fake(build["id"], disk=True)
        ids.append(build["id"])
        if index == 0:
            harness.call("POST", f"/api/builds/{build['id']}/bless")
    result = harness.call("POST", "/api/gc").json()
    assert sorted(result["purged"]) == ids[1:3]
    assert result["freed_bytes"] > 0
    for build_id in ids:
        folder = builds.artifact_dir(settings, build_id)
        assert folder.exists() == (build_id not in ids[1:3])
    gone = harness.call("GET", f"/api/builds/{ids[1]}/artifacts/demo.tar", "viewer")
    assert gone.status_code == 404
    assert "retention" in gone.json()["error"]
    disk = harness.call("GET", "/api/disk", "viewer").json()
    assert disk["artifacts_bytes"] == sum(
        retention.directory_size(builds.artifact_dir(settings, i)) for i in ids
    )


def test_the_disk_budget_frees_more_but_never_the_newest_or_in_use(harness: Harness) -> None:
    settings = harness.console.settings
    harness.configuration()
    ids = []
    for _ in range(4):
        build = harness.build()
        harness.run_fake(build["id"])
        ids.append(build["id"])
    object.__setattr__(settings, "disk_budget", 1)
    with harness.console.in_use.hold(ids[0]), harness.console.db.session() as session:
        result = retention.collect(session, settings, harness.console.in_use)
    assert sorted(result.purged) == ids[1:3]  # not the one in use, not the newest
    assert result.over_budget > 0


def test_schedules_fire_once_per_due_time(harness: Harness) -> None:
    harness.configuration()
    created = harness.call(
        "POST",
        "/api/configurations/demo/schedules",
        "builder",
        json={"cron": "@nightly", "milestone": "daily"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["cron"] == "0 2 * * *"
    assert created.json()["next_run"].endswith("T02:00:00+00:00")
    bad = harness.call(
        "POST", "/api/configurations/demo/schedules", "builder", json={"cron": "every night"}
    )
    assert bad.status_code == 422
    assert "five fields" in bad.json()["hint"]
    with harness.console.db.session() as session:
        later = time.time() + 2 * 86400
        fired = schedules.fire_due(session, harness.queue, at=later)
        assert len(fired) == 4  # the matrix
        assert schedules.fire_due(session, harness.queue, at=later) == []
    listed = harness.call("GET", "/api/builds?milestone=daily", "viewer").json()
    assert {b["requested_by"] for b in listed} == {"schedule 1"}


def test_tokens_roles_and_the_openapi_document(harness: Harness) -> None:
    made = harness.call("POST", "/api/tokens", "builder", json={"name": "ci", "role": "admin"})
    assert made.status_code == 403
    made = harness.call("POST", "/api/tokens", "admin", json={"name": "ci", "role": "builder"})
    assert made.status_code == 201
    token = made.json()["token"]
    assert (
        harness.client.get("/api/status", headers={"Authorization": f"Bearer {token}"}).json()[
            "you"
        ]["role"]
        == "builder"
    )
    schema = harness.client.get("/openapi.json").json()
    for path in (
        "/api/builds",
        "/api/builds/{build_id}/cancel",
        "/api/builds/{build_id}/bless",
        "/api/configurations/{name}/diff",
        "/api/search/packages",
        "/api/lookup",
        "/api/configurations/{name}/schedules",
        "/api/disk",
    ):
        assert path in schema["paths"], path


def test_only_admins_import_from_the_consoles_own_disk(harness: Harness) -> None:
    for form in (
        {"name": "x", "directory": "/etc"},
        {"name": "x", "git_url": "/srv/repo.git"},
        {"name": "x", "git_url": "file:///srv/repo.git"},
    ):
        reply = harness.call("POST", "/api/configurations/import", "builder", data=form)
        assert reply.status_code == 403, form
